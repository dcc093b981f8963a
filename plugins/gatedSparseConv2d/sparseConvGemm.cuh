/*
 * The GEMM core of the sparse convolution: CTA tile sizes, and the multiply-accumulate of one
 * K chunk held in shared memory (A = weights stored [k][m], B = input footprint stored
 * [k][n], C staged as float [m][n]). float: CUDA-core FMA, 4 x 4 outputs per thread;
 * half: WMMA 16x16x16 tensor-core fragments with float accumulation.
 */
#pragma once

#include <cuda_fp16.h>
#include <mma.h>

namespace vseg::sparseconv
{

constexpr int kThreads = 256;                    // conv CTA size (8 warps)
constexpr int kBlockM = 64;                      // output channels per conv CTA
constexpr int kBlockN = 64;                      // stack positions per conv CTA
constexpr int kRowsPerPass = kThreads / kBlockN; // K rows the CTA loads in one pass
constexpr int kStageStride = kBlockN + 4;        // float staging row; a multiple of 4 for WMMA
static_assert(kBlockM == kBlockN, "a thread loads A column and B column `tid % 64`");

//! K-chunk depth and shared-memory row padding per storage type.
template <typename T>
struct Tiling;
template <>
struct Tiling<float>
{
    static constexpr int kBlockK = 16;
    static constexpr int kPad = 0;
};
template <>
struct Tiling<__half>
{
    static constexpr int kBlockK = 32; // two WMMA k-steps
    static constexpr int kPad = 8;     // keeps WMMA leading dimensions multiples of 8 halves
};

//! The multiply-accumulate of one K chunk: float on CUDA cores, half on tensor cores.
template <typename T>
struct MathCore;

template <>
struct MathCore<float>
{
    float acc[4][4]; // 4 output channels x 4 positions per thread, 16 x 16 threads

    __device__ void clear()
    {
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j)
                acc[i][j] = 0.0F;
    }

    __device__ void multiply(float const (*sA)[kBlockM], float const (*sB)[kBlockN])
    {
        int const tm = threadIdx.x / 16;
        int const tn = threadIdx.x % 16;
#pragma unroll
        for (int k = 0; k < Tiling<float>::kBlockK; ++k)
        {
            float4 const a = *reinterpret_cast<float4 const*>(&sA[k][tm * 4]);
            float4 const b = *reinterpret_cast<float4 const*>(&sB[k][tn * 4]);
            float const av[4] = {a.x, a.y, a.z, a.w};
            float const bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j)
                    acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
        }
    }

    __device__ void store(float (*sC)[kStageStride]) const
    {
        int const tm = threadIdx.x / 16;
        int const tn = threadIdx.x % 16;
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j)
                sC[tm * 4 + i][tn * 4 + j] = acc[i][j];
    }
};

template <>
struct MathCore<__half>
{
    // 8 warps: 4 along M (16 channels each) x 2 along N (32 positions = 2 fragments each)
    nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> acc[2];

    __device__ void clear()
    {
        nvcuda::wmma::fill_fragment(acc[0], 0.0F);
        nvcuda::wmma::fill_fragment(acc[1], 0.0F);
    }

    __device__ void multiply(__half const (*sA)[kBlockM + 8], __half const (*sB)[kBlockN + 8])
    {
        using namespace nvcuda;
        int const warp = threadIdx.x / 32;
        int const wm = warp % 4;
        int const wn = warp / 4;
#pragma unroll
        for (int ks = 0; ks < Tiling<__half>::kBlockK; ks += 16)
        {
            // sA is stored [k][m]: a column-major M x K operand
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::col_major> a;
            wmma::load_matrix_sync(a, &sA[ks][wm * 16], kBlockM + 8);
#pragma unroll
            for (int f = 0; f < 2; ++f)
            {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> b;
                wmma::load_matrix_sync(b, &sB[ks][wn * 32 + f * 16], kBlockN + 8);
                wmma::mma_sync(acc[f], a, b, acc[f]);
            }
        }
    }

    __device__ void store(float (*sC)[kStageStride]) const
    {
        int const warp = threadIdx.x / 32;
        int const wm = warp % 4;
        int const wn = warp / 4;
        for (int f = 0; f < 2; ++f)
        {
            nvcuda::wmma::store_matrix_sync(
                &sC[wm * 16][wn * 32 + f * 16], acc[f], kStageStride, nvcuda::wmma::mem_row_major);
        }
    }
};

} // namespace vseg::sparseconv
