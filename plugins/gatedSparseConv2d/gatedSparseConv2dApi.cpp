// The C ABI of GatedSparseConv2d (vseg_kernels.h): argument checks, then the launcher.
#include "gatedSparseConv2dKernel.h"
#include "indexMath.h"
#include "kernelStatus.h"
#include "vseg_kernels.h"

extern "C" VSEG_API size_t vseg_gated_sparse_conv2d_workspace_size(
    int n, int c_in, int c_out, int out_h, int out_w, int kernel, int groups, int tile, int dtype)
{
    return vseg::gatedSparseConvWorkspaceSize(n, c_in, c_out, out_h, out_w, kernel, groups, tile, dtype);
}

extern "C" VSEG_API int vseg_gated_sparse_conv2d(void const* x, int32_t const* decision, void const* y_prev,
    void const* weight, void const* bias, void* y, void* workspace, size_t workspace_size, int n, int c_in, int h,
    int w, int c_out, int kernel, int stride, int padding, int dilation, int groups, int tile, int coarse_mode,
    int activation, int dtype, cudaStream_t stream)
{
    using namespace vseg;
    constexpr char const* kWhat = "GatedSparseConv2d";
    if (x == nullptr || decision == nullptr || y_prev == nullptr || weight == nullptr || y == nullptr
        || workspace == nullptr)
        return fail(VSEG_ERROR_INVALID_ARGUMENT, "%s: null pointer argument", kWhat);
    if (n <= 0 || c_in <= 0 || h <= 0 || w <= 0 || c_out <= 0)
        return fail(VSEG_ERROR_INVALID_ARGUMENT, "%s: non-positive shape n=%d c_in=%d h=%d w=%d c_out=%d", kWhat, n,
            c_in, h, w, c_out);
    if (kernel < 1 || stride < 1 || padding < 0 || dilation < 1 || groups < 1)
        return fail(VSEG_ERROR_INVALID_ARGUMENT,
            "%s: invalid kernel=%d stride=%d padding=%d dilation=%d groups=%d", kWhat, kernel, stride, padding,
            dilation, groups);
    if (c_in % groups != 0 || c_out % groups != 0)
        return fail(VSEG_ERROR_INVALID_ARGUMENT, "%s: groups=%d must divide c_in=%d and c_out=%d", kWhat, groups,
            c_in, c_out);
    if (groups > 65535)
        return fail(VSEG_ERROR_UNSUPPORTED, "%s: groups=%d exceeds the grid limit 65535", kWhat, groups);
    if (tile != 4 && tile != 8 && tile != 16)
        return fail(VSEG_ERROR_INVALID_ARGUMENT, "%s: tile=%d must be 4, 8 or 16", kWhat, tile);
    if (coarse_mode != VSEG_COARSE_NEAREST && coarse_mode != VSEG_COARSE_BILINEAR)
        return fail(VSEG_ERROR_INVALID_ARGUMENT, "%s: coarse_mode=%d is not 0 or 1", kWhat, coarse_mode);
    if (activation != VSEG_ACTIVATION_NONE && activation != VSEG_ACTIVATION_RELU)
        return fail(VSEG_ERROR_INVALID_ARGUMENT, "%s: activation=%d is not 0 or 1", kWhat, activation);
    if (dtype != VSEG_DTYPE_FLOAT32 && dtype != VSEG_DTYPE_FLOAT16)
        return fail(VSEG_ERROR_INVALID_ARGUMENT, "%s: dtype=%d is not float32 (0) or float16 (1)", kWhat, dtype);
    int const outH = convOutputSize(h, kernel, stride, padding, dilation);
    int const outW = convOutputSize(w, kernel, stride, padding, dilation);
    if (outH <= 0 || outW <= 0)
        return fail(VSEG_ERROR_INVALID_ARGUMENT, "%s: input %dx%d is smaller than the dilated kernel", kWhat, h, w);
    long long const inElems = 1LL * n * c_in * h * w;
    long long const outElems = 1LL * n * c_out * outH * outW;
    long long const wElems = 1LL * c_out * (c_in / groups) * kernel * kernel;
    long long const stackPositions = 1LL * n * (outH + 16) * (outW + 16); // tiles rounded up
    if (!fitsInt32(inElems) || !fitsInt32(outElems) || !fitsInt32(wElems) || !fitsInt32(stackPositions))
        return fail(VSEG_ERROR_UNSUPPORTED, "%s: tensors over 2^31 elements are not supported", kWhat);
    size_t const needed = gatedSparseConvWorkspaceSize(n, c_in, c_out, outH, outW, kernel, groups, tile, dtype);
    if (workspace_size < needed)
        return fail(VSEG_ERROR_WORKSPACE, "%s: workspace of %zu bytes, %zu needed", kWhat, workspace_size, needed);

    SparseConvParams p{};
    p.n = n;
    p.cIn = c_in;
    p.h = h;
    p.w = w;
    p.cOut = c_out;
    p.outH = outH;
    p.outW = outW;
    p.kernel = kernel;
    p.stride = stride;
    p.padding = padding;
    p.dilation = dilation;
    p.cInPerGroup = c_in / groups;
    p.cOutPerGroup = c_out / groups;
    p.tilesH = ceilDiv(outH, tile);
    p.tilesW = ceilDiv(outW, tile);
    p.numTiles = n * p.tilesH * p.tilesW;
    p.coarseBilinear = coarse_mode == VSEG_COARSE_BILINEAR ? 1 : 0;
    p.relu = activation == VSEG_ACTIVATION_RELU ? 1 : 0;
    launchGatedSparseConv2d(p, tile, dtype, x, decision, y_prev, weight, bias, y, workspace, stream);
    return checkLaunch(kWhat);
}
