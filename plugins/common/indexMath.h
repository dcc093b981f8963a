/*
 * Integer helpers shared by host and device code (plain C++ when not compiled by nvcc).
 */
#pragma once

#if defined(__CUDACC__)
#define VSEG_HOST_DEVICE __host__ __device__
#else
#define VSEG_HOST_DEVICE
#endif

namespace vseg
{

VSEG_HOST_DEVICE inline int ceilDiv(int a, int b)
{
    return (a + b - 1) / b;
}

//! True when an element count fits the kernels' 32-bit index arithmetic.
inline bool fitsInt32(long long elements)
{
    return elements >= 0 && elements <= 0x7fffffffLL;
}

} // namespace vseg
