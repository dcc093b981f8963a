#include "gatedSparseConv2dPlugin.h"

#include "gatedSparseConv2dKernel.h"
#include "vseg_kernels.h"

#include <cstdint>
#include <exception>
#include <sstream>
#include <utility>

namespace vseg::plugin
{
namespace
{
namespace op = schema::GatedSparseConv2d;
using nvinfer1::DataType;

bool isFloatType(DataType type)
{
    return type == DataType::kFLOAT || type == DataType::kHALF;
}

bool fitsInt(int64_t v)
{
    return v >= 0 && v <= INT32_MAX;
}
} // namespace

GatedSparseConv2dPlugin::GatedSparseConv2dPlugin(SchemaAttributes attributes)
    : SchemaPlugin(std::move(attributes))
{
}

nvinfer1::IPluginV3* GatedSparseConv2dPlugin::clone() noexcept
{
    try
    {
        return new GatedSparseConv2dPlugin(*this);
    }
    catch (std::exception const& e)
    {
        failWith(e.what());
        return nullptr;
    }
}

std::string GatedSparseConv2dPlugin::checkShapes(nvinfer1::Dims const* dims, int32_t nbInputs, bool allKnown) const
{
    if (nbInputs != op::kNbInputs)
    {
        return "expects " + std::to_string(op::kNbInputs) + " inputs (x, decision, y_prev, weight, bias), got "
            + std::to_string(nbInputs);
    }
    static constexpr int32_t kRanks[op::kNbInputs] = {4, 4, 4, 4, 1};
    static constexpr char const* kNames[op::kNbInputs] = {"x", "decision", "y_prev", "weight", "bias"};
    for (int32_t i = 0; i < op::kNbInputs; ++i)
    {
        if (dims[i].nbDims != kRanks[i])
        {
            return std::string(kNames[i]) + " must have rank " + std::to_string(kRanks[i]);
        }
        for (int32_t d = 0; d < dims[i].nbDims; ++d)
        {
            bool const bad = allKnown ? !fitsInt(dims[i].d[d]) || dims[i].d[d] == 0 : dims[i].d[d] == 0;
            if (bad)
            {
                return std::string(kNames[i]) + " has an empty or out-of-range dimension";
            }
        }
    }
    nvinfer1::Dims const& x = dims[op::input::kX];
    nvinfer1::Dims const& decision = dims[op::input::kDecision];
    nvinfer1::Dims const& yPrev = dims[op::input::kYPrev];
    nvinfer1::Dims const& weight = dims[op::input::kWeight];
    nvinfer1::Dims const& bias = dims[op::input::kBias];
    int64_t const kernel = mAttrs.get(op::attr::kKernel);
    int64_t const groups = mAttrs.get(op::attr::kGroups);
    int32_t const tile = mAttrs.get(op::attr::kTile);
    std::ostringstream problem;
    auto differ = [](int64_t a, int64_t b) { return a >= 0 && b >= 0 && a != b; };

    if (differ(weight.d[2], kernel) || differ(weight.d[3], kernel))
        problem << "weight is " << weight.d[2] << "x" << weight.d[3] << " but kernel=" << kernel;
    else if (x.d[1] >= 0 && x.d[1] % groups != 0)
        problem << "groups=" << groups << " does not divide the " << x.d[1] << " input channels";
    else if (weight.d[0] >= 0 && weight.d[0] % groups != 0)
        problem << "groups=" << groups << " does not divide the " << weight.d[0] << " output channels";
    else if (x.d[1] >= 0 && differ(weight.d[1], x.d[1] / groups))
        problem << "weight has " << weight.d[1] << " input channels per group, x gives " << x.d[1] / groups;
    else if (differ(bias.d[0], weight.d[0]) || differ(yPrev.d[1], weight.d[0]))
        problem << "bias and y_prev must have weight's " << weight.d[0] << " output channels";
    else if (differ(decision.d[0], x.d[0]) || differ(yPrev.d[0], x.d[0]) || differ(decision.d[1], 1))
        problem << "x, decision and y_prev must share the batch size, and decision has 1 channel";
    for (int32_t axis = 2; axis < 4 && problem.tellp() == 0; ++axis)
    {
        if (x.d[axis] < 0)
        {
            continue;
        }
        int64_t const out = convOutputSize(static_cast<int>(x.d[axis]), static_cast<int>(kernel),
            mAttrs.get(op::attr::kStride), mAttrs.get(op::attr::kPadding), mAttrs.get(op::attr::kDilation));
        if (out <= 0)
            problem << "x is too small along axis " << axis << " for the dilated kernel";
        else if (differ(yPrev.d[axis], out))
            problem << "y_prev has " << yPrev.d[axis] << " along axis " << axis << ", the convolution gives " << out;
        else if (differ(decision.d[axis], (out + tile - 1) / tile))
            problem << "decision has " << decision.d[axis] << " tiles along axis " << axis << ", expected "
                    << (out + tile - 1) / tile << " (tile " << tile << ")";
    }
    return problem.str();
}

int32_t GatedSparseConv2dPlugin::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    try
    {
        if (nbOutputs != op::kNbOutputs)
        {
            return failWith("expects one output");
        }
        nvinfer1::Dims dims[op::kNbInputs];
        for (int32_t i = 0; i < nbInputs && i < op::kNbInputs; ++i)
        {
            dims[i] = in[i].desc.dims;
        }
        std::string const problem = checkShapes(dims, nbInputs, false);
        return problem.empty() ? 0 : failWith(problem);
    }
    catch (std::exception const& e)
    {
        return failWith(e.what());
    }
}

int32_t GatedSparseConv2dPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbOutputs != op::kNbOutputs || nbInputs != op::kNbInputs)
    {
        return failWith("expects 5 inputs and 1 output");
    }
    outputTypes[op::output::kY] = inputTypes[op::input::kX];
    return 0;
}

int32_t GatedSparseConv2dPlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
    nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
    int32_t nbOutputs, nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept
{
    if (nbOutputs != op::kNbOutputs || nbInputs != op::kNbInputs || inputs[op::input::kYPrev].nbDims != 4)
    {
        return failWith("expects 5 inputs with a rank-4 y_prev, and 1 output");
    }
    // y has y_prev's shape; configurePlugin checks that y_prev matches the convolution
    outputs[op::output::kY] = inputs[op::input::kYPrev];
    return 0;
}

bool GatedSparseConv2dPlugin::supportsFormatCombination(
    int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (nbInputs != op::kNbInputs || nbOutputs != op::kNbOutputs || pos < 0 || pos >= nbInputs + nbOutputs)
    {
        return false;
    }
    nvinfer1::PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != nvinfer1::TensorFormat::kLINEAR)
    {
        return false;
    }
    if (pos == op::input::kX)
    {
        return isFloatType(desc.type);
    }
    if (pos == op::input::kDecision)
    {
        return desc.type == DataType::kINT32;
    }
    // y_prev, weight, bias and y share x's type (fp32 or fp16, accumulation is fp32 either way)
    return desc.type == inOut[op::input::kX].desc.type;
}

size_t GatedSparseConv2dPlugin::getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept
{
    if (nbInputs != op::kNbInputs || nbOutputs != op::kNbOutputs || outputs[0].max.nbDims != 4)
    {
        return 0;
    }
    // the largest shapes this engine will see
    nvinfer1::Dims const& x = inputs[op::input::kX].max;
    nvinfer1::Dims const& y = outputs[op::output::kY].max;
    int const dtype = inputs[op::input::kX].desc.type == DataType::kHALF ? VSEG_DTYPE_FLOAT16 : VSEG_DTYPE_FLOAT32;
    return vseg_gated_sparse_conv2d_workspace_size(static_cast<int>(y.d[0]), static_cast<int>(x.d[1]),
        static_cast<int>(y.d[1]), static_cast<int>(y.d[2]), static_cast<int>(y.d[3]), mAttrs.get(op::attr::kKernel),
        mAttrs.get(op::attr::kGroups), mAttrs.get(op::attr::kTile), dtype);
}

int32_t GatedSparseConv2dPlugin::onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::PluginTensorDesc const* /*out*/, int32_t /*nbOutputs*/) noexcept
{
    try
    {
        nvinfer1::Dims dims[op::kNbInputs];
        for (int32_t i = 0; i < nbInputs && i < op::kNbInputs; ++i)
        {
            dims[i] = in[i].dims;
        }
        std::string const problem = checkShapes(dims, nbInputs, true);
        return problem.empty() ? 0 : failWith(problem);
    }
    catch (std::exception const& e)
    {
        return failWith(e.what());
    }
}

int32_t GatedSparseConv2dPlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* /*outputDesc*/, void const* const* inputs, void* const* outputs, void* workspace,
    cudaStream_t stream) noexcept
{
    nvinfer1::Dims const& x = inputDesc[op::input::kX].dims;
    nvinfer1::Dims const& yPrev = inputDesc[op::input::kYPrev].dims;
    int const n = static_cast<int>(x.d[0]);
    int const cIn = static_cast<int>(x.d[1]);
    int const cOut = static_cast<int>(yPrev.d[1]);
    int const tile = mAttrs.get(op::attr::kTile);
    int const kernel = mAttrs.get(op::attr::kKernel);
    int const groups = mAttrs.get(op::attr::kGroups);
    int const dtype = inputDesc[op::input::kX].type == DataType::kHALF ? VSEG_DTYPE_FLOAT16 : VSEG_DTYPE_FLOAT32;
    // no larger than getWorkspaceSize's answer for the maximum shapes, which TensorRT provides
    size_t const workspaceSize = vseg_gated_sparse_conv2d_workspace_size(
        n, cIn, cOut, static_cast<int>(yPrev.d[2]), static_cast<int>(yPrev.d[3]), kernel, groups, tile, dtype);
    bool const bilinear = static_cast<op::CoarseMode>(mAttrs.get(op::attr::kCoarseMode)) == op::CoarseMode::kBilinear;
    bool const relu = static_cast<op::Activation>(mAttrs.get(op::attr::kActivation)) == op::Activation::kRelu;

    int const status = vseg_gated_sparse_conv2d(inputs[op::input::kX],
        static_cast<int32_t const*>(inputs[op::input::kDecision]), inputs[op::input::kYPrev],
        inputs[op::input::kWeight], inputs[op::input::kBias], outputs[op::output::kY], workspace, workspaceSize, n,
        cIn, static_cast<int>(x.d[2]), static_cast<int>(x.d[3]), cOut, kernel, mAttrs.get(op::attr::kStride),
        mAttrs.get(op::attr::kPadding), mAttrs.get(op::attr::kDilation), groups, tile,
        bilinear ? VSEG_COARSE_BILINEAR : VSEG_COARSE_NEAREST, relu ? VSEG_ACTIVATION_RELU : VSEG_ACTIVATION_NONE, dtype,
        stream);
    return status == VSEG_OK ? 0 : failWith(vseg_last_error());
}

} // namespace vseg::plugin
