/*
 * The parts of an IPluginV3 and its creator that depend only on the schema: identity (name =
 * op type, namespace "vseg", version "1"), capability dispatch, attributes and their
 * serialisation. Each operator's plugin derives from SchemaPlugin and adds the shape, type
 * and format rules and the enqueue that calls its launcher.
 */
#pragma once

#include "pluginFields.h"
#include "pluginLogging.h"
#include "vseg_schema.h"

#include <NvInferRuntime.h>

#include <exception>
#include <string>
#include <utility>

namespace vseg::plugin
{

class SchemaPlugin : public nvinfer1::IPluginV3,
                     public nvinfer1::IPluginV3OneCore,
                     public nvinfer1::IPluginV3OneBuild,
                     public nvinfer1::IPluginV3OneRuntime
{
public:
    explicit SchemaPlugin(SchemaAttributes attributes)
        : mAttrs(std::move(attributes))
    {
    }

    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override
    {
        switch (type)
        {
        case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
        case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
        case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }

    char const* getPluginName() const noexcept override
    {
        return mAttrs.op().pluginName;
    }
    char const* getPluginVersion() const noexcept override
    {
        return schema::kPluginVersion;
    }
    char const* getPluginNamespace() const noexcept override
    {
        return schema::kPluginNamespace;
    }
    int32_t getNbOutputs() const noexcept override
    {
        return mAttrs.op().nbOutputs;
    }

    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override
    {
        try
        {
            return mAttrs.fieldsToSerialize();
        }
        catch (std::exception const& e)
        {
            logError(e.what());
            return nullptr;
        }
    }

    //! Plugins hold no per-context resources: a copy serves each execution context.
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept override
    {
        return clone();
    }

protected:
    //! Log "OpType: message" and return -1, the TensorRT failure status.
    int32_t failWith(std::string const& message) const noexcept
    {
        logError((std::string(mAttrs.op().opType) + ": " + message).c_str());
        return -1;
    }

    SchemaAttributes mAttrs;
};

//! The creator of PluginT, which provides `static schema::OpSpec const& opSpec()` and a
//! constructor from SchemaAttributes (throwing std::exception on invalid combinations).
template <typename PluginT>
class SchemaPluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    SchemaPluginCreator()
        : mFieldNames(PluginT::opSpec())
    {
    }

    nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fields,
        nvinfer1::TensorRTPhase /*phase*/) noexcept override
    {
        try
        {
            SchemaAttributes attributes(PluginT::opSpec());
            attributes.parse(fields);
            return new PluginT(std::move(attributes));
        }
        catch (std::exception const& e)
        {
            logError((std::string("layer ") + (name != nullptr ? name : "?") + ": " + e.what()).c_str());
            return nullptr;
        }
    }

    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override
    {
        return mFieldNames.collection();
    }
    char const* getPluginName() const noexcept override
    {
        return PluginT::opSpec().pluginName;
    }
    char const* getPluginVersion() const noexcept override
    {
        return schema::kPluginVersion;
    }
    char const* getPluginNamespace() const noexcept override
    {
        return schema::kPluginNamespace;
    }

private:
    SchemaFieldNames mFieldNames;
};

} // namespace vseg::plugin
