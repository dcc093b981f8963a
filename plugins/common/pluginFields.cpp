#include "pluginFields.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

namespace vseg::plugin
{
namespace
{

nvinfer1::PluginFieldType fieldType(schema::AttrSpec const& spec)
{
    return spec.type == schema::AttrType::kInt ? nvinfer1::PluginFieldType::kINT32 : nvinfer1::PluginFieldType::kCHAR;
}

[[noreturn]] void reject(schema::OpSpec const& op, schema::AttrSpec const* spec, std::string const& problem)
{
    std::string message = std::string(op.opType);
    if (spec != nullptr)
    {
        message += std::string(".") + spec->name;
    }
    throw std::invalid_argument(message + ": " + problem);
}

int32_t parseInt(schema::OpSpec const& op, schema::AttrSpec const& spec, nvinfer1::PluginField const& field)
{
    if (field.data == nullptr || field.length != 1)
    {
        reject(op, &spec, "expected one integer, got " + std::to_string(field.length) + " values");
    }
    int64_t value = 0;
    if (field.type == nvinfer1::PluginFieldType::kINT32)
    {
        value = *static_cast<int32_t const*>(field.data);
    }
    else if (field.type == nvinfer1::PluginFieldType::kINT64)
    {
        value = *static_cast<int64_t const*>(field.data);
    }
    else
    {
        reject(op, &spec, "expected an INT32 field");
    }
    bool allowed = value >= spec.minValue && value <= INT32_MAX;
    if (spec.allowedInts != nullptr)
    {
        allowed = false;
        for (int32_t i = 0; i < spec.nbAllowedInts; ++i)
        {
            allowed = allowed || spec.allowedInts[i] == value;
        }
    }
    if (!allowed)
    {
        reject(op, &spec, "value " + std::to_string(value) + " is not allowed by the schema");
    }
    return static_cast<int32_t>(value);
}

int32_t parseString(schema::OpSpec const& op, schema::AttrSpec const& spec, nvinfer1::PluginField const& field)
{
    if (field.type != nvinfer1::PluginFieldType::kCHAR || field.data == nullptr || field.length < 0)
    {
        reject(op, &spec, "expected a CHAR (string) field");
    }
    // the ONNX parser counts the terminating NUL in `length`; serialised fields may not
    char const* text = static_cast<char const*>(field.data);
    std::string const value(text, std::find(text, text + field.length, '\0'));
    std::string choices;
    for (int32_t i = 0; i < spec.nbAllowedStrings; ++i)
    {
        if (value == spec.allowedStrings[i])
        {
            return i;
        }
        choices += (i ? ", " : "") + std::string(spec.allowedStrings[i]);
    }
    reject(op, &spec, "'" + value + "' is not one of " + choices);
}

} // namespace

SchemaFieldNames::SchemaFieldNames(schema::OpSpec const& op)
{
    for (int32_t i = 0; i < op.nbAttrs; ++i)
    {
        mFields.emplace_back(op.attrs[i].name, nullptr, fieldType(op.attrs[i]), 1);
    }
    mCollection.nbFields = static_cast<int32_t>(mFields.size());
    mCollection.fields = mFields.data();
}

SchemaAttributes::SchemaAttributes(schema::OpSpec const& op)
    : mOp(&op)
{
    for (int32_t i = 0; i < op.nbAttrs; ++i)
    {
        mValues.push_back(op.attrs[i].defaultValue);
    }
}

void SchemaAttributes::parse(nvinfer1::PluginFieldCollection const* fields)
{
    if (fields == nullptr)
    {
        return;
    }
    for (int32_t f = 0; f < fields->nbFields; ++f)
    {
        nvinfer1::PluginField const& field = fields->fields[f];
        int32_t attr = -1;
        for (int32_t i = 0; i < mOp->nbAttrs && field.name != nullptr; ++i)
        {
            if (std::strcmp(field.name, mOp->attrs[i].name) == 0)
            {
                attr = i;
            }
        }
        if (attr < 0)
        {
            reject(*mOp, nullptr, std::string("unknown field '") + (field.name ? field.name : "(null)") + "'");
        }
        schema::AttrSpec const& spec = mOp->attrs[attr];
        mValues[static_cast<size_t>(attr)]
            = spec.type == schema::AttrType::kInt ? parseInt(*mOp, spec, field) : parseString(*mOp, spec, field);
    }
}

char const* SchemaAttributes::getString(int32_t attr) const
{
    schema::AttrSpec const& spec = mOp->attrs[attr];
    if (spec.type != schema::AttrType::kString)
    {
        throw std::logic_error(std::string(spec.name) + " is not a string attribute");
    }
    return spec.allowedStrings[mValues.at(static_cast<size_t>(attr))];
}

nvinfer1::PluginFieldCollection const* SchemaAttributes::fieldsToSerialize()
{
    mFields.clear();
    for (int32_t i = 0; i < mOp->nbAttrs; ++i)
    {
        schema::AttrSpec const& spec = mOp->attrs[i];
        if (spec.type == schema::AttrType::kInt)
        {
            mFields.emplace_back(spec.name, &mValues[static_cast<size_t>(i)], nvinfer1::PluginFieldType::kINT32, 1);
        }
        else
        {
            char const* text = getString(i);
            mFields.emplace_back(spec.name, text, nvinfer1::PluginFieldType::kCHAR,
                static_cast<int32_t>(std::strlen(text) + 1));
        }
    }
    mCollection.nbFields = static_cast<int32_t>(mFields.size());
    mCollection.fields = mFields.data();
    return &mCollection;
}

} // namespace vseg::plugin
