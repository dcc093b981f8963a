#include "kernelStatus.h"

#include "vseg_kernels.h"

#include <cstdarg>
#include <cstdio>
#include <string>

namespace vseg
{
namespace
{
// Per thread, so concurrent callers (several TensorRT contexts) never mix messages.
thread_local std::string tLastError;
} // namespace

int fail(int status, char const* format, ...)
{
    char buffer[512];
    va_list args;
    va_start(args, format);
    std::vsnprintf(buffer, sizeof(buffer), format, args);
    va_end(args);
    tLastError = buffer;
    return status;
}

int succeed()
{
    tLastError.clear();
    return VSEG_OK;
}

int checkLaunch(char const* what)
{
    cudaError_t const error = cudaGetLastError();
    if (error != cudaSuccess)
    {
        return fail(VSEG_ERROR_CUDA, "%s: kernel launch failed: %s", what, cudaGetErrorString(error));
    }
    return succeed();
}

} // namespace vseg

extern "C" VSEG_API int vseg_kernels_abi_version(void)
{
    return VSEG_KERNELS_ABI_VERSION;
}

extern "C" VSEG_API char const* vseg_status_string(int status)
{
    switch (status)
    {
    case VSEG_OK: return "ok";
    case VSEG_ERROR_INVALID_ARGUMENT: return "invalid argument";
    case VSEG_ERROR_UNSUPPORTED: return "unsupported";
    case VSEG_ERROR_WORKSPACE: return "workspace too small";
    case VSEG_ERROR_CUDA: return "CUDA error";
    default: return "unknown status";
    }
}

extern "C" VSEG_API char const* vseg_last_error(void)
{
    return vseg::tLastError.c_str();
}
