/*
 * Entry points of libvseg_plugins.so.
 *
 * Dynamic loading (the default): IPluginRegistry::loadLibrary, the Python
 * registry.load_library(path) and trtexec --dynamicPlugins call getCreators (and
 * setLoggerFinder, to route errors to the application's logger).
 * Static registration (build with -DVSEG_STATIC_REGISTRATION=ON): the creators register
 * themselves with getPluginRegistry() in namespace "vseg" when the library is loaded, the
 * REGISTER_TENSORRT_PLUGIN way; loadLibrary then refuses the same library, as its creators
 * already exist.
 */
#include "gatedSparseConv2dPlugin.h"
#include "mvWarpPlugin.h"
#include "pluginLogging.h"
#include "vseg_schema.h"

#include <NvInferRuntime.h>

#define VSEG_PLUGIN_API extern "C" __attribute__((visibility("default")))

namespace vseg::plugin
{
namespace
{

nvinfer1::IPluginCreatorInterface* const* allCreators(int32_t& count)
{
    static GatedSparseConv2dPluginCreator sGatedSparseConv2d;
    static MVWarpPluginCreator sMVWarp;
    static nvinfer1::IPluginCreatorInterface* const sCreators[] = {&sGatedSparseConv2d, &sMVWarp};
    count = static_cast<int32_t>(sizeof(sCreators) / sizeof(sCreators[0]));
    return sCreators;
}

#if VSEG_STATIC_REGISTRATION
//! Registers every creator with the global registry when the library is loaded.
struct StaticRegistrar
{
    StaticRegistrar()
    {
        int32_t count = 0;
        nvinfer1::IPluginCreatorInterface* const* creators = allCreators(count);
        for (int32_t i = 0; i < count; ++i)
        {
            if (!getPluginRegistry()->registerCreator(*creators[i], schema::kPluginNamespace))
            {
                logError("could not register a plugin creator (already registered?)");
            }
        }
    }
};
StaticRegistrar const sRegistrar;
#endif

} // namespace
} // namespace vseg::plugin

VSEG_PLUGIN_API nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    return vseg::plugin::allCreators(nbCreators);
}

VSEG_PLUGIN_API void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    vseg::plugin::setLoggerFinder(finder);
}
