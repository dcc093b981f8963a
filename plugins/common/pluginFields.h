/*
 * Plugin attributes driven by the generated schema header (vseg_schema.h, from
 * vseg/ops/schema.json): the field list a creator advertises, parsing and validating the
 * fields TensorRT passes in (from the ONNX node or a serialised engine), and the fields
 * written back on serialisation. Strings travel as kCHAR, integers as kINT32.
 */
#pragma once

#include "vseg_schema.h"

#include <NvInferRuntime.h>

#include <cstdint>
#include <vector>

namespace vseg::plugin
{

//! The fields an operator's creator advertises (names and types; no data).
class SchemaFieldNames
{
public:
    explicit SchemaFieldNames(schema::OpSpec const& op);
    nvinfer1::PluginFieldCollection const* collection() const noexcept
    {
        return &mCollection;
    }

private:
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mCollection{};
};

//! One plugin instance's attribute values: integers as given, strings as the index of
//! their value in the schema's allowed list.
class SchemaAttributes
{
public:
    //! Every attribute at its schema default.
    explicit SchemaAttributes(schema::OpSpec const& op);

    //! Override from `fields` (may be null: all defaults). Throws std::invalid_argument with
    //! one line naming the operator, the field and the problem.
    void parse(nvinfer1::PluginFieldCollection const* fields);

    //! The integer value, or the allowed-list index of a string attribute.
    int32_t get(int32_t attr) const
    {
        return mValues.at(static_cast<size_t>(attr));
    }

    //! The string value of a string attribute.
    char const* getString(int32_t attr) const;

    schema::OpSpec const& op() const noexcept
    {
        return *mOp;
    }

    //! Fields for IPluginV3OneRuntime::getFieldsToSerialize; valid until the next call or
    //! until this object is destroyed.
    nvinfer1::PluginFieldCollection const* fieldsToSerialize();

private:
    schema::OpSpec const* mOp;
    std::vector<int32_t> mValues;
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mCollection{};
};

} // namespace vseg::plugin
