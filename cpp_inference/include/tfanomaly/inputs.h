// Checks and parsers of the binary's input files, without TensorFlow (so they
// can be fuzzed and sanitized on their own: cpp_inference/fuzz/).
#pragma once

#include <string>
#include <vector>

#include "tfanomaly/inference.h"

namespace tfanomaly {

// The largest height, width or batch a .npy or PNG input may declare: far above
// any line image, low enough that no product of dimensions overflows.
constexpr long kMaxDim = 1 << 16;

// Checks a PNG's header (IHDR) against what the model takes: 8 bits per sample,
// the model's channels (gray 1, RGB 3, RGBA 4), and, unless ``whole``, its size.
// Returns "" when it fits, else what is wrong (the caller names the file);
// *unreadable is set when the bytes are not a PNG at all.
std::string CheckPng(const std::string& png, const ModelInfo& info, bool whole, bool* unreadable);

// Parses the bytes of a little-endian float32 .npy array named ``name``:
// [H, W, C] or [N, H, W, C] of the model's size (*count = N), or with ``whole``
// one image [H, W, C] of any H, W up to kMaxDim (*height, *width). Throws
// tfanomaly::Error (kImageUnreadable or kImageShape) naming the file; never
// anything else.
std::vector<float> ParseNpy(const std::string& raw, const std::string& name, const ModelInfo& info, bool whole, int* count,
                            int* height = nullptr, int* width = nullptr);

// The region id of a per-region input from its file name (..._R<id>.png / .npy);
// throws Error(kUsage) naming the file when there is none or it is out of range.
int RegionOf(const std::string& path);

}  // namespace tfanomaly
