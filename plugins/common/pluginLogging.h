/*
 * Error reporting for the plugins: through the logger TensorRT hands over with
 * setLoggerFinder() when the library is loaded dynamically, else on stderr.
 */
#pragma once

#include <NvInferRuntime.h>

namespace vseg::plugin
{

//! Keep the finder TensorRT passes to the library's setLoggerFinder entry point.
void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;

//! Report one line at error severity, prefixed "vseg: ".
void logError(char const* message) noexcept;

} // namespace vseg::plugin
