/*
 * Status reporting for the C ABI: a failed call stores one line on the calling thread
 * (vseg_last_error) and returns its status code.
 */
#pragma once

namespace vseg
{

//! Record `message` (printf-style) as this thread's last error and return `status`.
int fail(int status, char const* format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

//! Clear this thread's last error and return VSEG_OK.
int succeed();

//! VSEG_OK, or VSEG_ERROR_CUDA with the launch error's text (after a kernel launch).
int checkLaunch(char const* what);

} // namespace vseg
