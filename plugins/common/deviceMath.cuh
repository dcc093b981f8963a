/*
 * Device helpers shared by the kernels: float <-> storage-type conversions (all arithmetic
 * happens in float32), plus the integer helpers of indexMath.h.
 */
#pragma once

#include "indexMath.h"

#include <cuda_fp16.h>

namespace vseg
{

__device__ inline float toFloat(float v)
{
    return v;
}

__device__ inline float toFloat(__half v)
{
    return __half2float(v);
}

template <typename T>
__device__ inline T fromFloat(float v);

template <>
__device__ inline float fromFloat<float>(float v)
{
    return v;
}

template <>
__device__ inline __half fromFloat<__half>(float v)
{
    return __float2half_rn(v);
}

} // namespace vseg
