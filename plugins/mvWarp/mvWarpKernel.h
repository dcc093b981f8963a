/*
 * MVWarp: CUDA launcher behind vseg_mv_warp (see vseg_kernels.h).
 *
 * One pass, one thread per output element: grid.x runs over the pixels of a plane (so a
 * warp reads and writes consecutive addresses), grid.y over (image, channel) planes. Each
 * thread finds its pixel's motion-vector block, converts the vector from frame pixels to
 * feature pixels, and samples feat (nearest: floor(s + 0.5); bilinear: four taps) with zeros
 * or border handling. Arithmetic is float32 for both storage types.
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
