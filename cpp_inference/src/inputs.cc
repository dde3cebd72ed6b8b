#include "tfanomaly/inputs.h"

#include <cstdint>
#include <cstring>
#include <regex>

namespace tfanomaly {

std::string CheckPng(const std::string& png, const ModelInfo& info, bool whole, bool* unreadable) {
  *unreadable = false;
  static const char kSig[] = "\x89PNG\r\n\x1a\n";
  if (png.size() < 33 || png.compare(0, 8, kSig, 8) != 0 || png.compare(12, 4, "IHDR") != 0) {
    *unreadable = true;
    return "not a PNG file";
  }
  auto be32 = [&](size_t at) {
    return (static_cast<uint32_t>(static_cast<unsigned char>(png[at])) << 24) | (static_cast<uint32_t>(static_cast<unsigned char>(png[at + 1])) << 16) |
           (static_cast<uint32_t>(static_cast<unsigned char>(png[at + 2])) << 8) | static_cast<uint32_t>(static_cast<unsigned char>(png[at + 3]));
  };
  const uint32_t width = be32(16), height = be32(20);
  const int depth = static_cast<unsigned char>(png[24]), color = static_cast<unsigned char>(png[25]);
  int channels = 0;
  switch (color) {
    case 0: channels = 1; break;  // gray
    case 2: channels = 3; break;  // RGB
    case 6: channels = 4; break;  // RGBA
    default: break;               // palette (3) or gray + alpha (4): never what a model takes
  }
  const char* kinds[] = {"gray", "?", "RGB", "palette", "gray+alpha", "?", "RGBA"};
  const std::string kind = color <= 6 ? kinds[color] : "unknown color type";
  if (depth != 8) return std::to_string(depth) + "-bit " + kind + ", expected 8-bit";
  if (channels != info.channels) return kind + " (" + std::to_string(channels) + " channels), expected " + std::to_string(info.channels) + " channel(s)";
  const std::string size = std::to_string(width) + "x" + std::to_string(height);
  if (!whole && (width != static_cast<uint32_t>(info.width) || height != static_cast<uint32_t>(info.height)))
    return size + ", expected " + std::to_string(info.width) + "x" + std::to_string(info.height) + " (width x height)";
  if (width == 0 || height == 0) return "empty image";
  if (width > kMaxDim || height > kMaxDim) return size + ", larger than " + std::to_string(kMaxDim) + " pixels per side";
  return "";
}

namespace {

// Reads the comma-separated dimensions of a .npy shape tuple; each must be <= kMaxDim.
std::vector<long> Dims(const std::string& tuple, const std::string& name) {
  std::vector<long> dims;
  size_t i = 0;
  while (i < tuple.size()) {
    while (i < tuple.size() && (tuple[i] == ' ' || tuple[i] == ',')) ++i;
    if (i == tuple.size()) break;
    long v = 0;
    size_t digits = 0;
    for (; i < tuple.size() && tuple[i] >= '0' && tuple[i] <= '9'; ++i, ++digits) {
      v = v * 10 + (tuple[i] - '0');
      if (v > kMaxDim) throw Error(kImageShape, name + ": a dimension above " + std::to_string(kMaxDim) + " in the .npy shape");
    }
    if (!digits) throw Error(kImageUnreadable, name + ": malformed .npy shape");
    dims.push_back(v);
  }
  return dims;
}

}  // namespace

std::vector<float> ParseNpy(const std::string& raw, const std::string& name, const ModelInfo& info, bool whole, int* count, int* height, int* width) {
  if (raw.size() < 10 || raw.compare(0, 6, "\x93NUMPY") != 0) throw Error(kImageUnreadable, name + ": not a .npy file");
  const int major = static_cast<unsigned char>(raw[6]);
  size_t hlen, off;
  if (major == 1) {
    hlen = static_cast<unsigned char>(raw[8]) | (static_cast<unsigned char>(raw[9]) << 8);
    off = 10;
  } else {
    if (raw.size() < 12) throw Error(kImageUnreadable, name + ": truncated .npy header");
    hlen = 0;
    for (int i = 0; i < 4; ++i) hlen |= static_cast<size_t>(static_cast<unsigned char>(raw[8 + i])) << (8 * i);
    off = 12;
  }
  if (hlen > raw.size() - off) throw Error(kImageUnreadable, name + ": truncated .npy header");
  const std::string header = raw.substr(off, hlen);
  if (header.find("'<f4'") == std::string::npos) throw Error(kImageUnreadable, name + ": expected float32 ('<f4') data");
  if (header.find("'fortran_order': True") != std::string::npos) throw Error(kImageUnreadable, name + ": Fortran order not supported");
  std::smatch m;
  static const std::regex shape_re("'shape': \\(([0-9, ]*)\\)");
  if (!std::regex_search(header, m, shape_re)) throw Error(kImageUnreadable, name + ": no shape in .npy header");
  std::vector<long> dims = Dims(m[1].str(), name);
  const size_t data = off + hlen;
  long n = 1;
  if (whole) {
    if (dims.size() != 3 || dims[0] <= 0 || dims[1] <= 0 || dims[2] != info.channels)
      throw Error(kImageShape, name + ": expected one whole image of shape [H, W, " + std::to_string(info.channels) + "]");
  } else {
    if (dims.size() == 4) {
      n = dims[0];
      dims.erase(dims.begin());
    }
    if (dims.size() != 3 || dims[0] != info.height || dims[1] != info.width || dims[2] != info.channels || n <= 0)
      throw Error(kImageShape, name + ": expected shape [" + std::to_string(info.height) + ", " + std::to_string(info.width) + ", " +
                                   std::to_string(info.channels) + "] or [N, " + std::to_string(info.height) + ", " + std::to_string(info.width) +
                                   ", " + std::to_string(info.channels) + "]");
  }
  // each factor <= kMaxDim = 2^16 and channels <= 4: the product fits in 64 bits
  const size_t values = static_cast<size_t>(n) * static_cast<size_t>(dims[0]) * static_cast<size_t>(dims[1]) * static_cast<size_t>(dims[2]);
  if (raw.size() - data != values * sizeof(float)) throw Error(kImageUnreadable, name + ": truncated .npy data");
  std::vector<float> out(values);
  if (values) std::memcpy(out.data(), raw.data() + data, values * sizeof(float));
  *count = static_cast<int>(n);
  if (height) *height = static_cast<int>(dims[0]);
  if (width) *width = static_cast<int>(dims[1]);
  return out;
}

int RegionOf(const std::string& path) {
  static const std::regex re("_R([0-9]{1,9})\\.(png|npy)$");
  std::smatch m;
  if (!std::regex_search(path, m, re)) throw Error(kUsage, path + ": per-region model: name the file ..._R<region>.png (region id below 10^9)");
  return std::stoi(m[1].str());
}

}  // namespace tfanomaly
