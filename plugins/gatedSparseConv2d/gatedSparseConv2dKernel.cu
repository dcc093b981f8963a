// GatedSparseConv2d kernels and launcher; the algorithm is described in gatedSparseConv2dKernel.h.
#include "gatedSparseConv2dKernel.h"

#include "deviceMath.cuh"
#include "sparseConvGemm.cuh"
#include "vseg_kernels.h"

#include <algorithm>
#include <cstdint>
#include <cuda_fp16.h>
#include <type_traits>

namespace vseg
{
namespace
{
using namespace sparseconv;

constexpr int kCopyThreads = 128;      // classify / REUSE-copy CTA size
constexpr int kMaxSlots = kBlockN / 4; // COARSE tiles per conv CTA at most (tile 4: 4 samples each)
constexpr size_t kCountersBytes = 256; // two int counters, padded so the tile list stays aligned
using ConvParams = SparseConvParams;

__device__ inline void tileOrigin(int tileIndex, ConvParams const& p, int tile, int& img, int& row0, int& col0)
{
    int const perImage = p.tilesH * p.tilesW;
    img = tileIndex / perImage;
    int const rest = tileIndex - img * perImage;
    row0 = (rest / p.tilesW) * tile;
    col0 = (rest % p.tilesW) * tile;
}

// ---------------------------------------------------------------------------------------
// 1. classify tiles (REUSE tiles are copied here) and reorder the weights

template <typename T, typename Vec>
__global__ void __launch_bounds__(kCopyThreads) classifyTilesKernel(int32_t const* __restrict__ decision,
    T const* yPrev, T* y, T const* __restrict__ weight, T* __restrict__ weightGemm, int* __restrict__ counts,
    int* __restrict__ tileList, ConvParams p, int tile)
{
    // weight [cOut][cInPerGroup][tap] -> weightGemm [group][tap][cInPerGroup][cOutPerGroup], so
    // that the conv's A loads (fixed tap and channel, consecutive output channels) coalesce.
    // Spread over the whole grid; the conv kernel runs after this launch.
    int const taps = p.kernel * p.kernel;
    int const weightCount = p.cOut * p.cInPerGroup * taps;
    for (int i = blockIdx.x * kCopyThreads + threadIdx.x; i < weightCount; i += gridDim.x * kCopyThreads)
    {
        int const coLocal = i % p.cOutPerGroup;
        int rest = i / p.cOutPerGroup;
        int const ci = rest % p.cInPerGroup;
        rest /= p.cInPerGroup;
        int const tap = rest % taps;
        int const group = rest / taps;
        weightGemm[i] = weight[((group * p.cOutPerGroup + coLocal) * p.cInPerGroup + ci) * taps + tap];
    }

    int const tileIndex = blockIdx.x;
    if (tileIndex >= p.numTiles)
    {
        return; // an extra CTA for a large weight tensor and few tiles
    }
    int const d = decision[tileIndex];
    if (d != VSEG_TILE_REUSE)
    {
        if (threadIdx.x == 0)
        {
            if (d == VSEG_TILE_COARSE)
            {
                tileList[p.numTiles - 1 - atomicAdd(&counts[1], 1)] = tileIndex;
            }
            else
            {
                tileList[atomicAdd(&counts[0], 1)] = tileIndex;
            }
        }
        return;
    }
    int img, row0, col0;
    tileOrigin(tileIndex, p, tile, img, row0, col0);
    constexpr int kPerVec = sizeof(Vec) / sizeof(T);
    int const rows = min(tile, p.outH - row0);
    int const vecsPerRow = min(tile, p.outW - col0) / kPerVec; // exact: the launcher checked divisibility
    int const perChannel = rows * vecsPerRow;
    int const plane = p.outH * p.outW;
    int const base = img * p.cOut * plane + row0 * p.outW + col0;
    for (int i = threadIdx.x; i < p.cOut * perChannel; i += kCopyThreads)
    {
        int const c = i / perChannel;
        int const rest = i - c * perChannel;
        int const a = rest / vecsPerRow;
        int const offset = base + c * plane + a * p.outW + (rest - a * vecsPerRow) * kPerVec;
        *reinterpret_cast<Vec*>(y + offset) = *reinterpret_cast<Vec const*>(yPrev + offset);
    }
}

// ---------------------------------------------------------------------------------------
// 2. + 3. implicit-GEMM conv over the stack of active positions, with the epilogue

struct StackPosition
{
    int img, outY, outX;
    bool valid; // inside the output map (border tiles are partial)
};

//! Stack position -> output pixel: DENSE tiles first (every output), then COARSE tiles
//! (tile-local even outputs, row-major), each tile's positions contiguous.
template <int TILE>
__device__ StackPosition decodePosition(
    int position, int densePositions, int totalPositions, int const* tileList, ConvParams const& p)
{
    constexpr int kHalf = TILE / 2;
    StackPosition s{0, 0, 0, false};
    if (position >= totalPositions)
    {
        return s;
    }
    int tileIndex, a, b;
    if (position < densePositions)
    {
        tileIndex = tileList[position / (TILE * TILE)];
        int const local = position % (TILE * TILE);
        a = local / TILE;
        b = local % TILE;
    }
    else
    {
        int const q = position - densePositions;
        tileIndex = tileList[p.numTiles - 1 - q / (kHalf * kHalf)];
        int const local = q % (kHalf * kHalf);
        a = 2 * (local / kHalf);
        b = 2 * (local % kHalf);
    }
    int row0, col0;
    tileOrigin(tileIndex, p, TILE, s.img, row0, col0);
    s.outY = row0 + a;
    s.outX = col0 + b;
    s.valid = s.outY < p.outH && s.outX < p.outW;
    return s;
}


template <typename T, int TILE>
__global__ void __launch_bounds__(kThreads) sparseConvKernel(T const* __restrict__ x,
    T const* __restrict__ weightGemm, T const* __restrict__ bias, T* __restrict__ y, int const* __restrict__ counts,
    int const* __restrict__ tileList, ConvParams p)
{
    constexpr int kBlockK = Tiling<T>::kBlockK;
    constexpr int kPad = Tiling<T>::kPad;
    constexpr int kLoads = kBlockK / kRowsPerPass; // A and B elements per thread per chunk
    constexpr int kHalf = TILE / 2;
    constexpr int kSamples = kHalf * kHalf; // COARSE positions per tile
    static_assert(kBlockN % kSamples == 0, "a COARSE tile's samples must not straddle CTAs");
    static_assert(kBlockN / kSamples <= kMaxSlots, "slot arrays too small");

    __shared__ __align__(32) T sA[kBlockK][kBlockM + kPad];
    __shared__ __align__(32) T sB[kBlockK][kBlockN + kPad];
    __shared__ __align__(32) float sC[kBlockM][kStageStride];
    __shared__ int sDenseOut[kBlockN];
    __shared__ int sSlotBase[kMaxSlots], sSlotRows[kMaxSlots], sSlotCols[kMaxSlots];

    int const densePositions = counts[0] * TILE * TILE;
    int const totalPositions = densePositions + counts[1] * kSamples;
    int const blockStart = blockIdx.x * kBlockN;
    if (blockStart >= totalPositions)
    {
        return; // the grid covers the all-DENSE worst case
    }
    int const tid = threadIdx.x;
    int const col = tid % kBlockN; // this thread's B column (stack position) and A column (channel)
    int const kRow = tid / kBlockN;
    int const coBlock = blockIdx.y * kBlockM;
    int const coGroupBase = blockIdx.z * p.cOutPerGroup;
    int const planeIn = p.h * p.w;
    int const planeOut = p.outH * p.outW;
    int const taps = p.kernel * p.kernel;

    StackPosition const pos = decodePosition<TILE>(blockStart + col, densePositions, totalPositions, tileList, p);
    int const inBase = (pos.img * p.cIn + blockIdx.z * p.cInPerGroup) * planeIn;
    int const iy0 = pos.outY * p.stride - p.padding;
    int const ix0 = pos.outX * p.stride - p.padding;
    if (tid < kBlockN)
    {
        bool const dense = pos.valid && blockStart + col < densePositions;
        sDenseOut[col] = dense ? (pos.img * p.cOut * p.outH + pos.outY) * p.outW + pos.outX : -1;
    }
    int const co = coBlock + col;
    bool const coValid = co < p.cOutPerGroup;
    // weightGemm [group][tap][ci][co]: this thread's output channel, in its group
    T const* wGroup
        = weightGemm + static_cast<size_t>(blockIdx.z) * taps * p.cInPerGroup * p.cOutPerGroup + (coValid ? co : 0);

    T regA[kLoads];
    T regB[kLoads];
    T const zero = fromFloat<T>(0.0F);
    // K index = tap * cInPerGroup + ci: within a chunk the tap is fixed, so the halo bounds
    // check and the spatial offset are computed once per chunk, not per element.
    auto loadChunk = [&](int chunk) {
        int const tap = chunk / p.cInChunks;
        int const ciStart = (chunk - tap * p.cInChunks) * kBlockK + kRow;
        int const ky = tap / p.kernel;
        int const iy = iy0 + ky * p.dilation;
        int const ix = ix0 + (tap - ky * p.kernel) * p.dilation;
        bool const inside = pos.valid && iy >= 0 && iy < p.h && ix >= 0 && ix < p.w;
        int const spatial = inBase + iy * p.w + ix;
#pragma unroll
        for (int j = 0; j < kLoads; ++j)
        {
            int const ci = ciStart + j * kRowsPerPass;
            bool const ciValid = ci < p.cInPerGroup;
            regB[j] = (inside && ciValid) ? x[spatial + ci * planeIn] : zero;
            regA[j] = (coValid && ciValid) ? wGroup[(tap * p.cInPerGroup + ci) * p.cOutPerGroup] : zero;
        }
    };

    MathCore<T> math;
    math.clear();
    int const numChunks = taps * p.cInChunks;
    loadChunk(0);
    for (int chunk = 0; chunk < numChunks; ++chunk)
    {
#pragma unroll
        for (int j = 0; j < kLoads; ++j)
        {
            sA[kRow + j * kRowsPerPass][col] = regA[j];
            sB[kRow + j * kRowsPerPass][col] = regB[j];
        }
        __syncthreads();
        if (chunk + 1 < numChunks)
        {
            loadChunk(chunk + 1); // global loads in flight while this chunk is multiplied
        }
        math.multiply(sA, sB);
        __syncthreads();
    }
    math.store(sC);
    __syncthreads();

    // bias + activation in place: sC now holds final outputs (DENSE) or samples (COARSE)
    for (int i = tid; i < kBlockM * kBlockN; i += kThreads)
    {
        int const m = i / kBlockN;
        int const c = i % kBlockN;
        float v = sC[m][c];
        if (bias != nullptr && coBlock + m < p.cOutPerGroup)
        {
            v += toFloat(bias[coGroupBase + coBlock + m]);
        }
        sC[m][c] = p.relu ? fmaxf(v, 0.0F) : v;
    }
    int const coarseFirst = max(densePositions - blockStart, 0);
    int const numSlots = max(min(totalPositions - blockStart, kBlockN) - coarseFirst, 0) / kSamples;
    if (tid < numSlots)
    {
        int const q = blockStart + coarseFirst + tid * kSamples - densePositions;
        int img, row0, col0;
        tileOrigin(tileList[p.numTiles - 1 - q / kSamples], p, TILE, img, row0, col0);
        sSlotBase[tid] = (img * p.cOut * p.outH + row0) * p.outW + col0;
        sSlotRows[tid] = min(TILE, p.outH - row0);
        sSlotCols[tid] = min(TILE, p.outW - col0);
    }
    __syncthreads();

    int const coCount = min(kBlockM, p.cOutPerGroup - coBlock);
    T* yGroup = y + static_cast<size_t>(coGroupBase + coBlock) * planeOut;
    for (int i = tid; i < coCount * kBlockN; i += kThreads)
    {
        int const m = i / kBlockN;
        int const c = i % kBlockN;
        if (sDenseOut[c] >= 0)
        {
            yGroup[sDenseOut[c] + m * planeOut] = fromFloat<T>(sC[m][c]);
        }
    }
    // COARSE fill: each output averages (bilinear) or repeats (nearest) the tile's own samples
    for (int i = tid; i < coCount * numSlots * TILE * TILE; i += kThreads)
    {
        int const b = i % TILE;
        int const a = (i / TILE) % TILE;
        int const slot = (i / (TILE * TILE)) % numSlots;
        int const m = i / (TILE * TILE * numSlots);
        int const rows = sSlotRows[slot];
        int const cols = sSlotCols[slot];
        if (a >= rows || b >= cols)
        {
            continue;
        }
        float const* s = &sC[m][coarseFirst + slot * kSamples];
        int const r0 = a >> 1;
        int const c0 = b >> 1;
        float v;
        if (p.coarseBilinear)
        {
            // odd positions average their two neighbours; past the tile's last sample, clamp
            int const r1 = (a & 1) ? min(r0 + 1, (rows - 1) >> 1) : r0;
            int const c1 = (b & 1) ? min(c0 + 1, (cols - 1) >> 1) : c0;
            float const left = 0.5F * (s[r0 * kHalf + c0] + s[r1 * kHalf + c0]);
            float const right = 0.5F * (s[r0 * kHalf + c1] + s[r1 * kHalf + c1]);
            v = 0.5F * (left + right);
        }
        else
        {
            v = s[r0 * kHalf + c0];
        }
        yGroup[sSlotBase[slot] + m * planeOut + a * p.outW + b] = fromFloat<T>(v);
    }
}

// ---------------------------------------------------------------------------------------
// host side

size_t roundUp256(size_t bytes)
{
    return (bytes + 255) / 256 * 256;
}

//! Workspace: [2 counters | tile list | reordered weights], each part 256-byte aligned.
struct WorkspaceLayout
{
    size_t listOffset, weightOffset, total;
};

WorkspaceLayout workspaceLayout(int numTiles, long long weightElements, size_t elementBytes)
{
    WorkspaceLayout layout{};
    layout.listOffset = kCountersBytes;
    layout.weightOffset = layout.listOffset + roundUp256(static_cast<size_t>(numTiles) * sizeof(int));
    layout.total = layout.weightOffset + roundUp256(static_cast<size_t>(weightElements) * elementBytes);
    return layout;
}

template <typename T, typename Vec>
void launchClassify(int32_t const* decision, T const* yPrev, T* y, T const* weight, T* weightGemm, int* counts,
    int* tileList, ConvParams const& p, int tile, cudaStream_t stream)
{
    // one CTA per tile, or more when the weights need them (a few tiles, a big layer)
    int const weightBlocks = std::min(ceilDiv(p.cOut * p.cInPerGroup * p.kernel * p.kernel, kCopyThreads), 1024);
    classifyTilesKernel<T, Vec><<<std::max(p.numTiles, weightBlocks), kCopyThreads, 0, stream>>>(
        decision, yPrev, y, weight, weightGemm, counts, tileList, p, tile);
}

template <typename T, int TILE>
void launchConv(T const* x, T const* weightGemm, T const* bias, T* y, int const* counts, int const* tileList,
    ConvParams const& p, cudaStream_t stream)
{
    dim3 const grid(ceilDiv(p.numTiles * TILE * TILE, kBlockN), ceilDiv(p.cOutPerGroup, kBlockM), p.cOut / p.cOutPerGroup);
    sparseConvKernel<T, TILE><<<grid, kThreads, 0, stream>>>(x, weightGemm, bias, y, counts, tileList, p);
}

template <typename T>
void launchAll(void const* x, int32_t const* decision, void const* yPrev, void const* weight, void const* bias, void* y,
    void* workspace, ConvParams const& p, int tile, cudaStream_t stream)
{
    WorkspaceLayout const layout
        = workspaceLayout(p.numTiles, 1LL * p.cOut * p.cInPerGroup * p.kernel * p.kernel, sizeof(T));
    char* base = static_cast<char*>(workspace);
    int* counts = reinterpret_cast<int*>(base);
    int* tileList = reinterpret_cast<int*>(base + layout.listOffset);
    T* weightGemm = reinterpret_cast<T*>(base + layout.weightOffset);
    cudaMemsetAsync(counts, 0, 2 * sizeof(int), stream);

    T const* yPrevT = static_cast<T const*>(yPrev);
    T* yT = static_cast<T*>(y);
    T const* wT = static_cast<T const*>(weight);
    // widest copy unit that every REUSE row start, row length and pointer is aligned to
    size_t const rowBytes = static_cast<size_t>(p.outW) * sizeof(T);
    size_t const tileBytes = static_cast<size_t>(tile) * sizeof(T);
    uintptr_t const addresses = reinterpret_cast<uintptr_t>(yPrev) | reinterpret_cast<uintptr_t>(y);
    using PairUnit = std::conditional_t<sizeof(T) == 2, unsigned int, T>; // 4 bytes: two halves, or one float
    auto fits = [&](size_t unit) { return rowBytes % unit == 0 && tileBytes % unit == 0 && addresses % unit == 0; };
    if (fits(16))
        launchClassify<T, uint4>(decision, yPrevT, yT, wT, weightGemm, counts, tileList, p, tile, stream);
    else if (fits(8))
        launchClassify<T, uint2>(decision, yPrevT, yT, wT, weightGemm, counts, tileList, p, tile, stream);
    else if (fits(4))
        launchClassify<T, PairUnit>(decision, yPrevT, yT, wT, weightGemm, counts, tileList, p, tile, stream);
    else
        launchClassify<T, T>(decision, yPrevT, yT, wT, weightGemm, counts, tileList, p, tile, stream);

    T const* xT = static_cast<T const*>(x);
    T const* bT = static_cast<T const*>(bias);
    switch (tile)
    {
    case 4: launchConv<T, 4>(xT, weightGemm, bT, yT, counts, tileList, p, stream); break;
    case 8: launchConv<T, 8>(xT, weightGemm, bT, yT, counts, tileList, p, stream); break;
    default: launchConv<T, 16>(xT, weightGemm, bT, yT, counts, tileList, p, stream); break;
    }
}

} // namespace

size_t gatedSparseConvWorkspaceSize(
    int n, int cIn, int cOut, int outH, int outW, int kernel, int groups, int tile, int dtype)
{
    bool const valid = n > 0 && cIn > 0 && cOut > 0 && outH > 0 && outW > 0 && kernel > 0 && groups > 0
        && cIn % groups == 0 && (tile == 4 || tile == 8 || tile == 16)
        && (dtype == VSEG_DTYPE_FLOAT32 || dtype == VSEG_DTYPE_FLOAT16);
    if (!valid)
    {
        return 0;
    }
    long long const numTiles = 1LL * n * ceilDiv(outH, tile) * ceilDiv(outW, tile);
    if (!fitsInt32(numTiles))
    {
        return 0;
    }
    size_t const elementBytes = dtype == VSEG_DTYPE_FLOAT16 ? 2 : 4;
    return workspaceLayout(static_cast<int>(numTiles), 1LL * cOut * (cIn / groups) * kernel * kernel, elementBytes)
        .total;
}

void launchGatedSparseConv2d(SparseConvParams params, int tile, int dtype, void const* x, int32_t const* decision,
    void const* yPrev, void const* weight, void const* bias, void* y, void* workspace, cudaStream_t stream)
{
    if (dtype == VSEG_DTYPE_FLOAT16)
    {
        params.cInChunks = ceilDiv(params.cInPerGroup, Tiling<__half>::kBlockK);
        launchAll<__half>(x, decision, yPrev, weight, bias, y, workspace, params, tile, stream);
    }
    else
    {
        params.cInChunks = ceilDiv(params.cInPerGroup, Tiling<float>::kBlockK);
        launchAll<float>(x, decision, yPrev, weight, bias, y, workspace, params, tile, stream);
    }
}

} // namespace vseg
