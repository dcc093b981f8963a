// GatedSparseConv2d kernels and launcher; the algorithm is described in gatedSparseConv2dKernel.h.
#include "gatedSparseConv2dKernel.h"

#include "deviceMath.cuh"
#include "sparseConvGemm.cuh"
#include "vseg_kernels.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
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
// K split (see gatedSparseConv2dKernel.h): at most kMaxSplit parts, only for groups == 1, only
// while the live CTAs are at most half the split target; one partial C tile per part and slot.
constexpr int kMaxSplit = 4;
constexpr int kMaxSplitSlots = 256; // live CTAs a split can serve (split target <= 2 x this)
constexpr int kTileFloats = kBlockM * kBlockN;
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


//! Serial split-K: every part stores its partial tile, and the part that arrives last adds
//! them all (in part order, so the sum does not depend on arrival) into sC and carries on with
//! the epilogue. Returns whether this CTA is that last part. One slot per live (position block,
//! channel block): below kMaxSplitSlots because splitting needs few live CTAs.
__device__ inline bool sumSplits(
    float (*sC)[kStageStride], int* semaphores, float* partials, int slot, int split, int splits)
{
    __shared__ int sArrival;
    float* tiles = partials + static_cast<size_t>(slot) * kMaxSplit * kTileFloats;
    for (int i = threadIdx.x; i < kTileFloats; i += kThreads)
    {
        tiles[split * kTileFloats + i] = sC[i / kBlockN][i % kBlockN];
    }
    __threadfence(); // the partial is visible device-wide before the arrival is counted
    __syncthreads();
    if (threadIdx.x == 0)
    {
        sArrival = atomicAdd(&semaphores[slot], 1);
    }
    __syncthreads();
    if (sArrival != splits - 1)
    {
        return false;
    }
    __threadfence();
    for (int i = threadIdx.x; i < kTileFloats; i += kThreads)
    {
        float sum = 0.0F;
        for (int part = 0; part < splits; ++part)
        {
            sum += __ldcg(&tiles[part * kTileFloats + i]); // L2: written by other SMs
        }
        sC[i / kBlockN][i % kBlockN] = sum;
    }
    __syncthreads();
    return true;
}

//! What one CTA computes: a block of stack positions x a block of output channels, or one K
//! part of it.
struct ConvWork
{
    int posBlock, coBlock;
    int split, splits, slot; // K part, parts, partial-tile slot (split-K only)
};

//! This CTA's work; false when it has none. Without a split, the CTA's own (position block,
//! channel block), idle past the live positions (the grid covers the all-DENSE worst case).
//! With few live blocks (at most half the split target, so SMs would idle) the K loop is cut
//! into parts, run by the first live x parts CTAs in dispatch order: work the idle CTAs of the
//! worst-case grid take over, so no extra CTAs are launched. Every CTA derives the same plan
//! from the same counters.
__device__ inline bool assignWork(int totalPositions, int numChunks, ConvParams const& p, ConvWork& w)
{
    int const livePosBlocks = ceilDiv(totalPositions, kBlockN);
    int const live = livePosBlocks * gridDim.y;
    int const ctas = gridDim.x * gridDim.y;
    w.splits = 1;
    if (p.maxSplit > 1 && 2 * live <= p.splitTarget)
    {
        w.splits = min(min(p.maxSplit, numChunks), min(p.splitTarget / live, ctas / live));
    }
    if (w.splits == 1)
    {
        w.posBlock = blockIdx.x;
        w.coBlock = blockIdx.y;
        w.split = 0;
        w.slot = 0;
        return blockIdx.x < livePosBlocks;
    }
    int const item = blockIdx.y * gridDim.x + blockIdx.x; // dispatch order
    if (item >= live * w.splits)
    {
        return false;
    }
    w.slot = item % live;
    w.split = item / live;
    w.posBlock = w.slot / gridDim.y;
    w.coBlock = w.slot - w.posBlock * gridDim.y;
    return true;
}

template <typename T, int TILE>
__global__ void __launch_bounds__(kThreads) sparseConvKernel(T const* __restrict__ x,
    T const* __restrict__ weightGemm, T const* __restrict__ bias, T* __restrict__ y, int const* __restrict__ counts,
    int const* __restrict__ tileList, int* __restrict__ semaphores, float* __restrict__ partials, ConvParams p)
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
    int const taps = p.kernel * p.kernel;
    int const numChunks = taps * p.cInChunks;
    ConvWork work;
    if (!assignWork(totalPositions, numChunks, p, work))
    {
        return;
    }
    int const group = blockIdx.z;
    int const blockStart = work.posBlock * kBlockN;
    int const chunkBegin = work.split * numChunks / work.splits;
    int const chunkEnd = (work.split + 1) * numChunks / work.splits;
    int const tid = threadIdx.x;
    int const col = tid % kBlockN; // this thread's B column (stack position) and A column (channel)
    int const kRow = tid / kBlockN;
    int const coBlock = work.coBlock * kBlockM;
    int const coGroupBase = group * p.cOutPerGroup;
    int const planeIn = p.h * p.w;
    int const planeOut = p.outH * p.outW;

    StackPosition const pos = decodePosition<TILE>(blockStart + col, densePositions, totalPositions, tileList, p);
    int const inBase = (pos.img * p.cIn + group * p.cInPerGroup) * planeIn;
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
        = weightGemm + static_cast<size_t>(group) * taps * p.cInPerGroup * p.cOutPerGroup + (coValid ? co : 0);

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
    loadChunk(chunkBegin);
    for (int chunk = chunkBegin; chunk < chunkEnd; ++chunk)
    {
#pragma unroll
        for (int j = 0; j < kLoads; ++j)
        {
            sA[kRow + j * kRowsPerPass][col] = regA[j];
            sB[kRow + j * kRowsPerPass][col] = regB[j];
        }
        __syncthreads();
        if (chunk + 1 < chunkEnd)
        {
            loadChunk(chunk + 1); // global loads in flight while this chunk is multiplied
        }
        math.multiply(sA, sB);
        __syncthreads();
    }
    math.store(sC);
    __syncthreads();
    if (work.splits > 1 && !sumSplits(sC, semaphores, partials, work.slot, work.split, work.splits))
    {
        return; // another part finishes this tile
    }

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

//! Slots of partial tiles a split can use: live CTAs are at most min(worst-case CTAs,
//! kMaxSplitSlots) when it splits; none with groups > 1 (never split).
int splitSlots(int numTiles, int tile, int cOutPerGroup, int groups)
{
    if (groups != 1)
    {
        return 0;
    }
    long long const ctas = 1LL * ceilDiv(numTiles * tile * tile, kBlockN) * ceilDiv(cOutPerGroup, kBlockM);
    return static_cast<int>(std::min<long long>(ctas, kMaxSplitSlots));
}

//! Workspace: [2 counters | split semaphores | tile list | reordered weights | split partials],
//! each part 256-byte aligned; the counters and semaphores are zeroed by one memset per call.
struct WorkspaceLayout
{
    size_t semaphoreOffset, listOffset, weightOffset, partialOffset, total;
};

WorkspaceLayout workspaceLayout(int numTiles, long long weightElements, size_t elementBytes, int slots)
{
    WorkspaceLayout layout{};
    layout.semaphoreOffset = kCountersBytes;
    layout.listOffset = layout.semaphoreOffset + roundUp256(static_cast<size_t>(slots) * sizeof(int));
    layout.weightOffset = layout.listOffset + roundUp256(static_cast<size_t>(numTiles) * sizeof(int));
    layout.partialOffset = layout.weightOffset + roundUp256(static_cast<size_t>(weightElements) * elementBytes);
    layout.total = layout.partialOffset + static_cast<size_t>(slots) * kMaxSplit * kTileFloats * sizeof(float);
    return layout;
}

//! kMaxSplit, or fewer through VSEG_SPARSE_CONV_MAX_SPLIT (1 turns split-K off): a knob for
//! benchmarks/gpu_kernels.py to time both variants in one run; read at each launch (or capture).
int maxSplitSetting()
{
    char const* text = std::getenv("VSEG_SPARSE_CONV_MAX_SPLIT");
    int const value = text != nullptr ? std::atoi(text) : kMaxSplit;
    return std::max(1, std::min(value, kMaxSplit));
}

//! Live CTAs below half this split the K loop: twice the SMs of the device, within the slots.
int splitTarget()
{
    int device = 0;
    int sms = 0;
    if (cudaGetDevice(&device) != cudaSuccess
        || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess)
    {
        return 0; // no split; the launch that follows reports the error
    }
    return std::min(2 * sms, 2 * kMaxSplitSlots);
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
    int* semaphores, float* partials, ConvParams const& p, cudaStream_t stream)
{
    dim3 const grid(ceilDiv(p.numTiles * TILE * TILE, kBlockN), ceilDiv(p.cOutPerGroup, kBlockM), p.cOut / p.cOutPerGroup);
    sparseConvKernel<T, TILE>
        <<<grid, kThreads, 0, stream>>>(x, weightGemm, bias, y, counts, tileList, semaphores, partials, p);
}

template <typename T>
void launchAll(void const* x, int32_t const* decision, void const* yPrev, void const* weight, void const* bias, void* y,
    void* workspace, ConvParams p, int tile, cudaStream_t stream)
{
    int const groups = p.cOut / p.cOutPerGroup;
    int const slots = splitSlots(p.numTiles, tile, p.cOutPerGroup, groups);
    WorkspaceLayout const layout
        = workspaceLayout(p.numTiles, 1LL * p.cOut * p.cInPerGroup * p.kernel * p.kernel, sizeof(T), slots);
    p.splitTarget = std::min(splitTarget(), 2 * slots);
    p.maxSplit = p.splitTarget >= 2 ? maxSplitSetting() : 1;
    char* base = static_cast<char*>(workspace);
    int* counts = reinterpret_cast<int*>(base);
    int* semaphores = reinterpret_cast<int*>(base + layout.semaphoreOffset);
    int* tileList = reinterpret_cast<int*>(base + layout.listOffset);
    T* weightGemm = reinterpret_cast<T*>(base + layout.weightOffset);
    float* partials = reinterpret_cast<float*>(base + layout.partialOffset);
    cudaMemsetAsync(counts, 0, layout.listOffset, stream); // counters and semaphores

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
    case 4: launchConv<T, 4>(xT, weightGemm, bT, yT, counts, tileList, semaphores, partials, p, stream); break;
    case 8: launchConv<T, 8>(xT, weightGemm, bT, yT, counts, tileList, semaphores, partials, p, stream); break;
    default: launchConv<T, 16>(xT, weightGemm, bT, yT, counts, tileList, semaphores, partials, p, stream); break;
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
    int const slots = splitSlots(static_cast<int>(numTiles), tile, cOut / groups, groups);
    return workspaceLayout(
        static_cast<int>(numTiles), 1LL * cOut * (cIn / groups) * kernel * kernel, elementBytes, slots)
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
