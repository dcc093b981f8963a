// MVWarp kernel and launcher; see mvWarpKernel.h.
#include "mvWarpKernel.h"

#include "deviceMath.cuh"
#include "kernelStatus.h"
#include "vseg_kernels.h"

#include <cuda_fp16.h>

namespace vseg
{
namespace
{

constexpr int kThreads = 256;
constexpr int kChannelsPerThread = 8; // loads in flight per thread before the first store
constexpr int kMaxGridY = 65535;

struct WarpParams
{
    int n, c, featH, featW, mvH, mvW;
    float scaleX, scaleY; // feature pixels per frame pixel
};

//! Where one output pixel reads: up to four plane offsets, each with an inside-the-map flag,
//! and the bilinear fractions. The same for every channel of an image, so computed once.
struct Taps
{
    int offset[4];  // (y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1); nearest: [0] only
    bool inside[4]; // outside taps read 0 (zeros padding) and their offset is never dereferenced
    float fx, fy;
};

__device__ inline void setTap(Taps& t, int k, int iy, int ix, int h, int w)
{
    t.inside[k] = iy >= 0 && iy < h && ix >= 0 && ix < w;
    t.offset[k] = iy * w + ix;
}

template <bool kBilinear, bool kBorder>
__device__ inline Taps findTaps(float const* mvImg, int x, int y, int blockY, int blockX, WarpParams const& p)
{
    // explicit roundings (no FMA contraction) so the sample position matches the reference
    // bit for bit: nearest sampling flips at .5 boundaries otherwise
    float sx = __fadd_rn(static_cast<float>(x), __fmul_rn(mvImg[blockY * p.mvW + blockX], p.scaleX));
    float sy = __fadd_rn(static_cast<float>(y), __fmul_rn(mvImg[(p.mvH + blockY) * p.mvW + blockX], p.scaleY));
    float const maxX = static_cast<float>(p.featW - 1);
    float const maxY = static_cast<float>(p.featH - 1);
    if (kBorder)
    {
        sx = fminf(fmaxf(sx, 0.0F), maxX);
        sy = fminf(fmaxf(sy, 0.0F), maxY);
    }
    else
    {
        // beyond one pixel outside every tap reads 0 anyway; keeps the int conversion in range
        sx = fminf(fmaxf(sx, -2.0F), maxX + 2.0F);
        sy = fminf(fmaxf(sy, -2.0F), maxY + 2.0F);
    }
    Taps t{};
    if (kBilinear)
    {
        float const x0f = floorf(sx);
        float const y0f = floorf(sy);
        t.fx = sx - x0f;
        t.fy = sy - y0f;
        int const x0 = static_cast<int>(x0f);
        int const y0 = static_cast<int>(y0f);
        // with border padding the clamped position keeps x0, y0 inside; x0 + 1 may still be
        // one past the edge, where its weight fx is 0
        setTap(t, 0, y0, x0, p.featH, p.featW);
        setTap(t, 1, y0, x0 + 1, p.featH, p.featW);
        setTap(t, 2, y0 + 1, x0, p.featH, p.featW);
        setTap(t, 3, y0 + 1, x0 + 1, p.featH, p.featW);
    }
    else
    {
        setTap(t, 0, static_cast<int>(floorf(sy + 0.5F)), static_cast<int>(floorf(sx + 0.5F)), p.featH, p.featW);
    }
    return t;
}

template <typename T>
__device__ inline float tap(T const* plane, Taps const& t, int k)
{
    return t.inside[k] ? toFloat(plane[t.offset[k]]) : 0.0F;
}

template <typename T, bool kBilinear>
__device__ inline float sample(T const* plane, Taps const& t)
{
    if (!kBilinear)
    {
        return tap(plane, t, 0);
    }
    float const top = (1.0F - t.fx) * tap(plane, t, 0) + t.fx * tap(plane, t, 1);
    float const bottom = (1.0F - t.fx) * tap(plane, t, 2) + t.fx * tap(plane, t, 3);
    return (1.0F - t.fy) * top + t.fy * bottom;
}

//! grid.x: pixels of a plane (a warp reads and writes consecutive addresses); grid.y: runs of
//! kChannelsPerThread channels of one image. A thread finds its pixel's taps once and samples
//! every channel of its run, all loads issued before the first store.
template <typename T, bool kBilinear, bool kBorder>
__global__ void __launch_bounds__(kThreads) mvWarpKernel(
    T const* __restrict__ feat, float const* __restrict__ mv, T* __restrict__ out, WarpParams p)
{
    int const pixel = blockIdx.x * kThreads + threadIdx.x;
    int const planeSize = p.featH * p.featW;
    if (pixel >= planeSize)
    {
        return;
    }
    int const y = pixel / p.featW;
    int const x = pixel - y * p.featW;
    int const blockY = y * p.mvH / p.featH; // nearest block, asymmetric + floor
    int const blockX = x * p.mvW / p.featW;
    int const runsPerImage = ceilDiv(p.c, kChannelsPerThread);
    for (int run = blockIdx.y; run < p.n * runsPerImage; run += gridDim.y)
    {
        int const img = run / runsPerImage;
        int const c0 = (run - img * runsPerImage) * kChannelsPerThread;
        Taps const t = findTaps<kBilinear, kBorder>(
            mv + static_cast<size_t>(img) * 2 * p.mvH * p.mvW, x, y, blockY, blockX, p);
        size_t const first = (static_cast<size_t>(img) * p.c + c0) * planeSize;
        int const channels = min(kChannelsPerThread, p.c - c0);
        float values[kChannelsPerThread];
#pragma unroll
        for (int j = 0; j < kChannelsPerThread; ++j)
        {
            values[j] = j < channels ? sample<T, kBilinear>(feat + first + static_cast<size_t>(j) * planeSize, t) : 0.0F;
        }
#pragma unroll
        for (int j = 0; j < kChannelsPerThread; ++j)
        {
            if (j < channels)
            {
                out[first + static_cast<size_t>(j) * planeSize + pixel] = fromFloat<T>(values[j]);
            }
        }
    }
}

template <typename T>
void launchTyped(void const* feat, float const* mv, void* out, WarpParams const& p, int mode, int padding,
    cudaStream_t stream)
{
    int const runs = p.n * ceilDiv(p.c, kChannelsPerThread);
    dim3 const grid(ceilDiv(p.featH * p.featW, kThreads), runs < kMaxGridY ? runs : kMaxGridY);
    auto const* in = static_cast<T const*>(feat);
    auto* o = static_cast<T*>(out);
    bool const bilinear = mode == VSEG_WARP_BILINEAR;
    bool const border = padding == VSEG_WARP_BORDER;
    if (bilinear && border)
        mvWarpKernel<T, true, true><<<grid, kThreads, 0, stream>>>(in, mv, o, p);
    else if (bilinear)
        mvWarpKernel<T, true, false><<<grid, kThreads, 0, stream>>>(in, mv, o, p);
    else if (border)
        mvWarpKernel<T, false, true><<<grid, kThreads, 0, stream>>>(in, mv, o, p);
    else
        mvWarpKernel<T, false, false><<<grid, kThreads, 0, stream>>>(in, mv, o, p);
}

} // namespace
} // namespace vseg

extern "C" VSEG_API int vseg_mv_warp(void const* feat, float const* mv, void* out, int n, int c, int feat_h,
    int feat_w, int mv_h, int mv_w, int block, int mode, int padding, int dtype, cudaStream_t stream)
{
    using namespace vseg;
    constexpr char const* kWhat = "MVWarp";
    if (feat == nullptr || mv == nullptr || out == nullptr)
        return fail(VSEG_ERROR_INVALID_ARGUMENT, "%s: null pointer argument", kWhat);
    if (n <= 0 || c <= 0 || feat_h <= 0 || feat_w <= 0 || mv_h <= 0 || mv_w <= 0 || block <= 0)
        return fail(VSEG_ERROR_INVALID_ARGUMENT,
            "%s: non-positive shape n=%d c=%d feat=%dx%d mv=%dx%d block=%d", kWhat, n, c, feat_h, feat_w, mv_h,
            mv_w, block);
    if (mode != VSEG_WARP_NEAREST && mode != VSEG_WARP_BILINEAR)
        return fail(VSEG_ERROR_INVALID_ARGUMENT, "%s: mode=%d is not 0 or 1", kWhat, mode);
    if (padding != VSEG_WARP_ZEROS && padding != VSEG_WARP_BORDER)
        return fail(VSEG_ERROR_INVALID_ARGUMENT, "%s: padding=%d is not 0 or 1", kWhat, padding);
    if (!fitsInt32(1LL * feat_h * feat_w) || !fitsInt32(1LL * n * c) || !fitsInt32(1LL * n * 2 * mv_h * mv_w)
        || !fitsInt32(1LL * feat_h * mv_h) || !fitsInt32(1LL * feat_w * mv_w) || !fitsInt32(1LL * mv_w * block)
        || !fitsInt32(1LL * mv_h * block))
        return fail(VSEG_ERROR_UNSUPPORTED, "%s: sizes beyond 32-bit index arithmetic", kWhat);

    WarpParams const p{
        n, c, feat_h, feat_w, mv_h, mv_w, mvWarpScale(feat_w, mv_w, block), mvWarpScale(feat_h, mv_h, block)};
    if (dtype == VSEG_DTYPE_FLOAT32)
        launchTyped<float>(feat, mv, out, p, mode, padding, stream);
    else if (dtype == VSEG_DTYPE_FLOAT16)
        launchTyped<__half>(feat, mv, out, p, mode, padding, stream);
    else
        return fail(VSEG_ERROR_INVALID_ARGUMENT, "%s: dtype=%d is not float32 (0) or float16 (1)", kWhat, dtype);
    return checkLaunch(kWhat);
}
