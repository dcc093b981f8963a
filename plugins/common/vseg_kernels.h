/*
 * The C ABI of libvseg_kernels.so: vseg's CUDA kernels on raw device pointers.
 *
 * Every tensor is a dense, contiguous NCHW device buffer. Calls only enqueue work on
 * `stream` (no host synchronisation, no allocation) and return a status: VSEG_OK, or an
 * error whose one-line detail vseg_last_error() gives on the calling thread. The same
 * functions back the TensorRT plugins (libvseg_plugins.so) and the Python tests (ctypes).
 */
#ifndef VSEG_KERNELS_H
#define VSEG_KERNELS_H

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define VSEG_API __declspec(dllexport)
#else
#define VSEG_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever a signature below changes; Python checks it before calling. */
#define VSEG_KERNELS_ABI_VERSION 1

enum vseg_status
{
    VSEG_OK = 0,
    VSEG_ERROR_INVALID_ARGUMENT = 1, /* a null pointer, a bad shape or attribute */
    VSEG_ERROR_UNSUPPORTED = 2,      /* valid, but not implemented (e.g. a tensor over 2^31 elements) */
    VSEG_ERROR_WORKSPACE = 3,        /* workspace smaller than the *_workspace_size() answer */
    VSEG_ERROR_CUDA = 4              /* a kernel launch failed */
};

enum vseg_dtype
{
    VSEG_DTYPE_FLOAT32 = 0,
    VSEG_DTYPE_FLOAT16 = 1
};

/* GatedSparseConv2d decision values, per output tile. */
enum vseg_tile_decision
{
    VSEG_TILE_REUSE = 0,  /* y = y_prev on the tile */
    VSEG_TILE_COARSE = 1, /* compute the tile-local even positions, fill the rest */
    VSEG_TILE_DENSE = 2   /* compute every output; any value other than 0 and 1 means DENSE */
};

/* The enumerations below follow the order of the "allowed" lists in vseg/ops/schema.json. */
enum vseg_coarse_mode
{
    VSEG_COARSE_NEAREST = 0,
    VSEG_COARSE_BILINEAR = 1
};

enum vseg_activation
{
    VSEG_ACTIVATION_NONE = 0,
    VSEG_ACTIVATION_RELU = 1
};

enum vseg_warp_mode
{
    VSEG_WARP_NEAREST = 0,
    VSEG_WARP_BILINEAR = 1
};

enum vseg_warp_padding
{
    VSEG_WARP_ZEROS = 0,
    VSEG_WARP_BORDER = 1
};

VSEG_API int vseg_kernels_abi_version(void);

/* A short constant name for a status ("ok", "invalid argument"...). */
VSEG_API char const* vseg_status_string(int status);

/* One line about the last failed call on this thread ("" after a success). */
VSEG_API char const* vseg_last_error(void);

/*
 * Bytes of device workspace vseg_gated_sparse_conv2d needs (the active-tile list and its
 * counters, and the weights reordered for the GEMM), for a batch of `n` outputs of
 * out_h x out_w. Returns 0 for invalid arguments.
 */
VSEG_API size_t vseg_gated_sparse_conv2d_workspace_size(
    int n, int c_in, int c_out, int out_h, int out_w, int kernel, int groups, int tile, int dtype);

/*
 * y = GatedSparseConv2d(x, decision, y_prev, weight, bias).
 *   x        [n, c_in, h, w]                dtype
 *   decision [n, 1, ceil(ho/tile), ceil(wo/tile)] int32
 *   y_prev   [n, c_out, ho, wo]             dtype (may be the same buffer as y: REUSE tiles
 *                                           then stay in place, others are overwritten)
 *   weight   [c_out, c_in/groups, kernel, kernel] dtype
 *   bias     [c_out] dtype, or NULL for none
 *   y        [n, c_out, ho, wo]             dtype, every element written
 * ho, wo follow the standard convolution formula. tile is 4, 8 or 16. Outputs are
 * accumulated in float32 for both dtypes.
 */
VSEG_API int vseg_gated_sparse_conv2d(void const* x, int32_t const* decision, void const* y_prev, void const* weight,
    void const* bias, void* y, void* workspace, size_t workspace_size, int n, int c_in, int h, int w, int c_out,
    int kernel, int stride, int padding, int dilation, int groups, int tile, int coarse_mode, int activation,
    int dtype, cudaStream_t stream);

/*
 * out = MVWarp(feat, mv).
 *   feat [n, c, feat_h, feat_w] dtype
 *   mv   [n, 2, mv_h, mv_w] float32, frame pixels (channel 0 dx, 1 dy) on blocks of
 *        `block` x `block` frame pixels
 *   out  [n, c, feat_h, feat_w] dtype
 */
VSEG_API int vseg_mv_warp(void const* feat, float const* mv, void* out, int n, int c, int feat_h, int feat_w,
    int mv_h, int mv_w, int block, int mode, int padding, int dtype, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* VSEG_KERNELS_H */
