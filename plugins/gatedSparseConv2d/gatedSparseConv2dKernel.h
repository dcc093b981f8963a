/*
 * GatedSparseConv2d: CUDA launcher behind vseg_gated_sparse_conv2d (see vseg_kernels.h).
 *
 * How sparsity becomes time (all on `stream`, no host synchronisation):
 *  1. classify (one CTA per output tile): REUSE tiles copy y_prev -> y right there, with the
 *     widest vector width the row pitch and pointers allow; DENSE tiles are appended to the
 *     front of a tile list and COARSE tiles to its back, through two device-side atomic counters.
 *     The same launch reorders the weights to [group][tap][cin][cout] in the workspace, so that
 *     the GEMM's weight loads are coalesced.
 *  2. sparse conv (one launch, grid sized for the all-DENSE worst case; CTAs past the live
 *     count exit at once): an implicit-GEMM convolution over the virtual stack of active
 *     positions: every output of each DENSE tile, then the tile-local even outputs of each
 *     COARSE tile (an input footprint at twice the stride). Each CTA gathers the input
 *     footprint (halo included, zeros outside the image) of its 64 stack positions straight
 *     from x into shared memory, chunk by chunk, so the stack never round-trips through
 *     global memory. GEMM: M = output channels of the group, N = stack positions,
 *     K = Cin/groups * kernel^2 (taps outer, channels inner). fp32: CUDA-core FMA, 4x4 outputs
 *     per thread; fp16: WMMA tensor cores (16x16x16) with float32 accumulation.
 *  3. epilogue (same CTA): bias + activation, then DENSE outputs are scattered to y and each
 *     COARSE tile (whole inside the CTA, since 64 is a multiple of its sample count) is filled
 *     from its samples (nearest or bilinear) and written.
 * Split-K (groups == 1): with high REUSE fractions only a few CTAs are live, each running the
 * whole K loop alone while most SMs idle (on an H100 at 75% REUSE the 1/8 map ran no faster
 * than at 0%). When the live CTAs are at most the SM count (half the split target, 2 x SMs),
 * each one's K loop is cut into up to 4 parts run by separate CTAs (idle CTAs of the
 * worst-case grid take them over: a grid 4x deep cost up to 36 us in exiting CTAs); every
 * part stores a float partial tile in the workspace and the part that arrives last sums them
 * in part order (deterministic) and runs the epilogue.
 * The workspace holds the counters, the split semaphores, the tile list, the reordered
 * weights and, for groups == 1, the split partials (at most 256 slots x 4 parts x 16 KB):
 * see gatedSparseConvWorkspaceSize.
 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <cuda_runtime_api.h>

namespace vseg
{

//! Shapes and attributes of one call, checked by the C ABI before any launch.
struct SparseConvParams
{
    int n, cIn, h, w, cOut, outH, outW;
    int kernel, stride, padding, dilation;
    int cInPerGroup, cOutPerGroup;
    int cInChunks; //!< K chunks per filter tap; set by the launcher for the dtype's chunk depth
    int tilesH, tilesW, numTiles;
    int coarseBilinear, relu;
    int maxSplit;    //!< K parts a CTA's work may be cut into (1: never); set by the launcher
    int splitTarget; //!< live CTAs below half this split their K loop; set by the launcher
};

//! Output length of a standard convolution along one axis; 0 when the dilated kernel does not fit.
inline int convOutputSize(int size, int kernel, int stride, int padding, int dilation)
{
    int const span = size + 2 * padding - dilation * (kernel - 1) - 1;
    return span < 0 ? 0 : span / stride + 1; // C++ division truncates: keep the numerator >= 0
}

//! Bytes of workspace (0 for invalid arguments): the two counters, the tile list for `n`
//! images of outH x outW outputs in tiles of `tile`, and the reordered weights.
size_t gatedSparseConvWorkspaceSize(
    int n, int cIn, int cOut, int outH, int outW, int kernel, int groups, int tile, int dtype);

//! Enqueue the whole operator on `stream` (memset, classify, conv). dtype is VSEG_DTYPE_*;
//! `workspace` holds at least gatedSparseConvWorkspaceSize(...) bytes. No checks here.
void launchGatedSparseConv2d(SparseConvParams params, int tile, int dtype, void const* x, int32_t const* decision,
    void const* yPrev, void const* weight, void const* bias, void* y, void* workspace, cudaStream_t stream);

} // namespace vseg
