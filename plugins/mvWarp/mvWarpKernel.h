/*
 * MVWarp: CUDA launcher behind vseg_mv_warp (see vseg_kernels.h).
 *
 * One pass: grid.x runs over the pixels of a plane (so a warp reads and writes consecutive
 * addresses), grid.y over runs of 8 channels of one image. Each thread finds its pixel's
 * motion-vector block once per run, converts the vector from frame pixels to feature pixels,
 * works out the taps (nearest: floor(s + 0.5); bilinear: four) with zeros or border handling,
 * then samples the run's channels with all their loads in flight before the first store: the
 * per-element thread of the first version spent its time on that arithmetic and on load
 * latency, not on bytes (fp16 ran at the same elements per second as fp32). Arithmetic is
 * float32 for both storage types.
 */
#pragma once

namespace vseg
{

//! Feature pixels per frame pixel along one axis: featSize / (mvSize * block), in float32
//! exactly as the kernel uses it (the Python reference rounds the same way).
inline float mvWarpScale(int featSize, int mvSize, int block)
{
    return static_cast<float>(featSize) / static_cast<float>(mvSize * block);
}

} // namespace vseg
