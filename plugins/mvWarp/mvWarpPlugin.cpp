#include "mvWarpPlugin.h"

#include "vseg_kernels.h"

#include <exception>

namespace vseg::plugin
{
namespace
{
namespace op = schema::MVWarp;
using nvinfer1::DataType;
} // namespace

nvinfer1::IPluginV3* MVWarpPlugin::clone() noexcept
{
    try
    {
        return new MVWarpPlugin(*this);
    }
    catch (std::exception const& e)
    {
        failWith(e.what());
        return nullptr;
    }
}

std::string MVWarpPlugin::checkShapes(nvinfer1::Dims const& feat, nvinfer1::Dims const& mv)
{
    if (feat.nbDims != 4 || mv.nbDims != 4)
    {
        return "feat and mv must have rank 4";
    }
    if (mv.d[1] >= 0 && mv.d[1] != 2)
    {
        return "mv must have 2 channels (dx, dy), got " + std::to_string(mv.d[1]);
    }
    if (feat.d[0] >= 0 && mv.d[0] >= 0 && feat.d[0] != mv.d[0])
    {
        return "feat and mv must share the batch size";
    }
    return "";
}

int32_t MVWarpPlugin::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    try
    {
        if (nbInputs != op::kNbInputs || nbOutputs != op::kNbOutputs)
        {
            return failWith("expects 2 inputs (feat, mv) and 1 output");
        }
        std::string const problem = checkShapes(in[op::input::kFeat].desc.dims, in[op::input::kMv].desc.dims);
        return problem.empty() ? 0 : failWith(problem);
    }
    catch (std::exception const& e)
    {
        return failWith(e.what());
    }
}

int32_t MVWarpPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbOutputs != op::kNbOutputs || nbInputs != op::kNbInputs)
    {
        return failWith("expects 2 inputs and 1 output");
    }
    outputTypes[op::output::kWarped] = inputTypes[op::input::kFeat];
    return 0;
}

int32_t MVWarpPlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
    nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
    int32_t nbOutputs, nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept
{
    if (nbOutputs != op::kNbOutputs || nbInputs != op::kNbInputs)
    {
        return failWith("expects 2 inputs and 1 output");
    }
    outputs[op::output::kWarped] = inputs[op::input::kFeat];
    return 0;
}

bool MVWarpPlugin::supportsFormatCombination(
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
    if (pos == op::input::kFeat)
    {
        return desc.type == DataType::kFLOAT || desc.type == DataType::kHALF;
    }
    if (pos == op::input::kMv)
    {
        return desc.type == DataType::kFLOAT; // vectors stay float32 whatever the features are
    }
    return desc.type == inOut[op::input::kFeat].desc.type;
}

int32_t MVWarpPlugin::onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::PluginTensorDesc const* /*out*/, int32_t /*nbOutputs*/) noexcept
{
    try
    {
        if (nbInputs != op::kNbInputs)
        {
            return failWith("expects 2 inputs (feat, mv)");
        }
        std::string const problem = checkShapes(in[op::input::kFeat].dims, in[op::input::kMv].dims);
        return problem.empty() ? 0 : failWith(problem);
    }
    catch (std::exception const& e)
    {
        return failWith(e.what());
    }
}

int32_t MVWarpPlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* /*outputDesc*/, void const* const* inputs, void* const* outputs,
    void* /*workspace*/, cudaStream_t stream) noexcept
{
    nvinfer1::Dims const& feat = inputDesc[op::input::kFeat].dims;
    nvinfer1::Dims const& mv = inputDesc[op::input::kMv].dims;
    bool const bilinear = static_cast<op::Mode>(mAttrs.get(op::attr::kMode)) == op::Mode::kBilinear;
    bool const border = static_cast<op::Padding>(mAttrs.get(op::attr::kPadding)) == op::Padding::kBorder;
    int const dtype = inputDesc[op::input::kFeat].type == DataType::kHALF ? VSEG_DTYPE_FLOAT16 : VSEG_DTYPE_FLOAT32;
    int const status = vseg_mv_warp(inputs[op::input::kFeat], static_cast<float const*>(inputs[op::input::kMv]),
        outputs[op::output::kWarped], static_cast<int>(feat.d[0]), static_cast<int>(feat.d[1]),
        static_cast<int>(feat.d[2]), static_cast<int>(feat.d[3]), static_cast<int>(mv.d[2]),
        static_cast<int>(mv.d[3]), mAttrs.get(op::attr::kBlock), bilinear ? VSEG_WARP_BILINEAR : VSEG_WARP_NEAREST,
        border ? VSEG_WARP_BORDER : VSEG_WARP_ZEROS, dtype, stream);
    return status == VSEG_OK ? 0 : failWith(vseg_last_error());
}

} // namespace vseg::plugin
