/*
 * TensorRT IPluginV3 for vseg::MVWarp (version 1): adapts TensorRT's tensor descriptions to
 * vseg_mv_warp. Attributes and I/O order come from vseg_schema.h (generated from
 * vseg/ops/schema.json); see README.md beside this file.
 */
#pragma once

#include "schemaPlugin.h"

#include <string>

namespace vseg::plugin
{

class MVWarpPlugin final : public SchemaPlugin
{
public:
    explicit MVWarpPlugin(SchemaAttributes attributes)
        : SchemaPlugin(std::move(attributes))
    {
    }

    static schema::OpSpec const& opSpec() noexcept
    {
        return schema::MVWarp::kOp;
    }

    nvinfer1::IPluginV3* clone() noexcept override;

    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;

    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;

private:
    //! "" when feat and mv have rank 4, mv has 2 channels and their batch sizes agree.
    static std::string checkShapes(nvinfer1::Dims const& feat, nvinfer1::Dims const& mv);
};

using MVWarpPluginCreator = SchemaPluginCreator<MVWarpPlugin>;

} // namespace vseg::plugin
