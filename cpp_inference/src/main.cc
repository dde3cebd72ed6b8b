// tfanomaly-infer MODEL_DIR IMAGES... [--batch 60] [--heatmaps DIR] [--json]
//
// PNG inputs run through the serve_png signature (decoded in the graph);
// .npy inputs (float32 [H, W, C] or [N, H, W, C] in [0, 1]) through
// serving_default. Each batch of --batch inputs is one strip (one acquisition
// run): its verdict is the max score and "defective" when any patch is flagged.
// For per-region models the region id of each input comes from its file name
// (..._R<id>.png / .npy). With --whole (models exported from a tiled run),
// each input is one whole image of any size, scored through serve_image_png /
// serve_image: the graph scales, tiles and stitches (the image score is the max
// over its tiles), and --batch images make one strip. Errors print one line and
// exit with the codes of tfanomaly::ErrorCode; the binary never aborts.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "tfanomaly/inference.h"
#include "tfanomaly/inputs.h"

using tfanomaly::CheckPng;
using tfanomaly::Error;
using tfanomaly::RegionOf;

namespace {

const char kUsageText[] =
    "usage: tfanomaly-infer MODEL_DIR IMAGES... [--batch N] [--whole] [--heatmaps DIR] [--json]\n"
    "  IMAGES   PNG patches (serve_png) or float32 .npy arrays (serving_default)\n"
    "  --batch  patches per run of the model, one strip (default 60)\n"
    "  --whole  each input is a whole image of any size, tiled inside the model\n"
    "           (serve_image_png / serve_image; models exported from a tiled run)\n"
    "  --heatmaps DIR  write each heatmap as DIR/<name>.npy (float32 [H, W])\n"
    "  --json   print results as JSON\n"
    "exit codes: 0 ok, 2 usage, 3 model missing, 4 model invalid, 5 image unreadable,\n"
    "            6 wrong image size/channels, 7 inference failed, 8 output not writable\n";

double Ms(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(tfanomaly::kImageUnreadable, "cannot read " + path);
  std::ostringstream ss;
  ss << f.rdbuf();
  if (ss.str().empty()) throw Error(tfanomaly::kImageUnreadable, "empty file " + path);
  return ss.str();
}

bool EndsWith(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

std::string Stem(const std::string& path) {
  auto slash = path.find_last_of('/');
  std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  auto dot = name.find_last_of('.');
  return dot == std::string::npos ? name : name.substr(0, dot);
}

// Reads a little-endian float32 .npy array; returns its values and the number of images in it.
// With ``whole``, one image [H, W, C] of any H, W (its size in *height, *width).
std::vector<float> ReadNpy(const std::string& path, const tfanomaly::ModelInfo& info, int* count, bool whole = false, int* height = nullptr,
                           int* width = nullptr) {
  return tfanomaly::ParseNpy(ReadFile(path), path, info, whole, count, height, width);
}

void WriteNpy(const std::string& path, const float* data, int h, int w) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(h) + ", " + std::to_string(w) + "), }";
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::ofstream f(path + ".tmp", std::ios::binary);
  if (!f) throw Error(tfanomaly::kOutput, "cannot write " + path);
  f.write("\x93NUMPY\x01\x00", 8);
  const unsigned short len = static_cast<unsigned short>(header.size());
  f.put(static_cast<char>(len & 0xff));
  f.put(static_cast<char>(len >> 8));
  f << header;
  f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(sizeof(float)) * h * w);
  f.close();
  if (!f || std::rename((path + ".tmp").c_str(), path.c_str()) != 0) throw Error(tfanomaly::kOutput, "cannot write " + path);
}

int Run(int argc, char** argv) {
  std::string model_dir, heat_dir;
  std::vector<std::string> files;
  int batch = 60;
  bool json = false, whole = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--batch" && i + 1 < argc) {
      try {
        batch = std::stoi(argv[++i]);
      } catch (...) {
        batch = 0;
      }
      if (batch <= 0) throw Error(tfanomaly::kUsage, "--batch: expected a positive integer");
    } else if (a == "--heatmaps" && i + 1 < argc) {
      heat_dir = argv[++i];
    } else if (a == "--json") {
      json = true;
    } else if (a == "--whole") {
      whole = true;
    } else if (a == "-h" || a == "--help") {
      std::cout << kUsageText;
      return 0;
    } else if (!a.empty() && a[0] == '-') {
      throw Error(tfanomaly::kUsage, "unknown option " + a);
    } else if (model_dir.empty()) {
      model_dir = a;
    } else {
      files.push_back(a);
    }
  }
  if (model_dir.empty() || files.empty()) throw Error(tfanomaly::kUsage, "expected MODEL_DIR and at least one image");

  auto t0 = std::chrono::steady_clock::now();
  tfanomaly::Model model = tfanomaly::Model::Load(model_dir);
  auto t1 = std::chrono::steady_clock::now();
  const auto& info = model.info();
  if (whole && !info.has_whole_image)
    throw Error(tfanomaly::kModelInvalid, "--whole: " + model_dir + " has no whole-image signatures (serve_image): export a run trained with data.tiling");

  // Inputs: PNG bytes or float arrays, one entry per image, with names and regions.
  std::vector<std::string> names, files_of;  // files_of[i]: the file image i came from
  std::vector<std::string> pngs;
  std::vector<float> floats;
  std::vector<std::pair<int, int>> sizes;  // --whole .npy: each image's [H, W]
  std::vector<size_t> offsets;             // --whole .npy: each image's first float
  std::vector<int32_t> regions;
  bool use_png = false, use_float = false;
  for (const auto& f : files) {
    if (EndsWith(f, ".npy")) {
      int n = 0, h = 0, w = 0;
      auto v = ReadNpy(f, info, &n, whole, &h, &w);
      if (whole) {
        sizes.emplace_back(h, w);
        offsets.push_back(floats.size());
      }
      floats.insert(floats.end(), v.begin(), v.end());
      for (int j = 0; j < n; ++j) names.push_back(n == 1 ? Stem(f) : Stem(f) + "_" + std::to_string(j));
      for (int j = 0; j < n; ++j) files_of.push_back(f);
      for (int j = 0; j < n && info.per_region; ++j) regions.push_back(RegionOf(f));
      use_float = true;
    } else {
      pngs.push_back(ReadFile(f));
      names.push_back(Stem(f));
      files_of.push_back(f);
      if (info.per_region) regions.push_back(RegionOf(f));
      use_png = true;
    }
  }
  if (use_png && use_float) throw Error(tfanomaly::kUsage, "give either PNG or .npy inputs, not both");
  if (use_png) {  // every file checked against the model before inference; all bad ones named
    std::string bad;
    int n_bad = 0;
    bool any_unreadable = false;
    for (size_t i = 0; i < pngs.size(); ++i) {
      bool unreadable = false;
      const std::string why = CheckPng(pngs[i], info, whole, &unreadable);
      if (why.empty()) continue;
      any_unreadable = any_unreadable || unreadable;
      bad += (n_bad++ ? "; " : "") + files_of[i] + ": " + why;
    }
    if (n_bad)
      throw Error(any_unreadable ? tfanomaly::kImageUnreadable : tfanomaly::kImageShape,
                  std::to_string(n_bad) + " of " + std::to_string(pngs.size()) + " inputs do not fit the model: " + bad);
  }

  tfanomaly::Result all;
  std::vector<double> batch_ms;
  std::vector<tfanomaly::StripVerdict> strips;
  const size_t total = names.size();
  const size_t per = static_cast<size_t>(info.height) * info.width * info.channels;
  for (size_t start = 0; start < total; start += batch) {
    const size_t end = std::min(total, start + batch);
    std::vector<int32_t> reg(regions.begin() + (info.per_region ? start : 0), regions.begin() + (info.per_region ? end : 0));
    auto b0 = std::chrono::steady_clock::now();
    tfanomaly::Result r;
    if (whole) {  // one whole image at a time, tiled inside the model
      for (size_t i = start; i < end; ++i) {
        const int32_t* region = info.per_region ? &regions[i] : nullptr;
        try {
          if (use_png) {
            r.Append(model.RunImagePng(pngs[i], region));
          } else {
            const size_t n = static_cast<size_t>(sizes[i].first) * sizes[i].second * info.channels;
            std::vector<float> img(floats.begin() + offsets[i], floats.begin() + offsets[i] + n);
            r.Append(model.RunImage(img, sizes[i].first, sizes[i].second, region));
          }
        } catch (const Error& e) {
          throw Error(e.code(), files_of[i] + ": " + e.what());
        }
      }
    } else if (use_png) {
      std::vector<std::string> chunk(pngs.begin() + start, pngs.begin() + end);
      r = model.RunPng(chunk, info.per_region ? &reg : nullptr);
    } else {
      std::vector<float> chunk(floats.begin() + start * per, floats.begin() + end * per);
      r = model.RunFloat(chunk, static_cast<int>(end - start), info.per_region ? &reg : nullptr);
    }
    batch_ms.push_back(Ms(b0, std::chrono::steady_clock::now()));
    strips.push_back(tfanomaly::AggregateStrip(r, 0, r.size()));
    all.Append(r);
  }
  auto t2 = std::chrono::steady_clock::now();

  if (!heat_dir.empty()) {
    size_t at = 0;
    for (size_t i = 0; i < total; ++i) {
      const auto [h, w] = all.heatmap_shapes[i];
      WriteNpy(heat_dir + "/" + names[i] + ".npy", all.heatmaps.data() + at, h, w);
      at += static_cast<size_t>(h) * w;
    }
  }

  double sum_ms = 0;
  for (double v : batch_ms) sum_ms += v;
  char buf[64];
  auto num = [&](double v) {
    if (json && !std::isfinite(v)) return std::string("null");  // JSON has no NaN / inf
    std::snprintf(buf, sizeof buf, "%.9g", v);
    return std::string(buf);
  };
  if (json) {
    std::cout << "{\"model\": \"" << model_dir << "\", \"load_ms\": " << num(Ms(t0, t1)) << ", \"run_ms\": " << num(Ms(t1, t2))
              << ", \"images\": [";
    for (size_t i = 0; i < total; ++i) {
      std::cout << (i ? ", " : "") << "{\"name\": \"" << names[i] << "\", \"score\": " << num(all.scores[i]);
      const bool finite = std::isfinite(all.scores[i]);
      if (!all.is_anomalous.empty() || !finite) std::cout << ", \"is_anomalous\": " << ((!finite || all.is_anomalous[i]) ? "true" : "false");
      if (!finite) std::cout << ", \"error\": \"non-finite score: judged anomalous\"";
      std::cout << "}";
    }
    std::cout << "], \"strips\": [";
    for (size_t s = 0; s < strips.size(); ++s) {
      std::cout << (s ? ", " : "") << "{\"max_score\": " << num(strips[s].max_score) << ", \"flagged_patches\": " << strips[s].flagged_patches
                << ", \"nonfinite_patches\": " << strips[s].nonfinite_patches
                << ", \"defective\": " << (strips[s].defective ? "true" : "false") << ", \"ms\": " << num(batch_ms[s]) << "}";
    }
    std::cout << "]}" << std::endl;
  } else {
    for (size_t i = 0; i < total; ++i) {
      std::cout << names[i] << "\t" << num(all.scores[i]);
      if (!std::isfinite(all.scores[i])) std::cout << "\tANOMALOUS (non-finite score)";
      else if (!all.is_anomalous.empty()) std::cout << "\t" << (all.is_anomalous[i] ? "ANOMALOUS" : "ok");
      std::cout << "\n";
    }
    for (size_t s = 0; s < strips.size(); ++s) {
      std::cout << "strip " << s << ": max score " << num(strips[s].max_score) << ", " << strips[s].flagged_patches << " flagged, "
                << (strips[s].nonfinite_patches ? "DEFECTIVE (non-finite scores)" : all.is_anomalous.empty() ? "no thresholds" : (strips[s].defective ? "DEFECTIVE" : "good")) << ", "
                << num(batch_ms[s]) << " ms\n";
    }
    std::cout << "load " << num(Ms(t0, t1)) << " ms, " << total << " images in " << num(sum_ms) << " ms ("
              << num(total / (sum_ms / 1000.0)) << " images/s)" << std::endl;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const Error& e) {
    std::cerr << "error: " << e.what() << std::endl;
    if (e.code() == tfanomaly::kUsage) std::cerr << kUsageText;
    return e.code();
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << std::endl;
    return tfanomaly::kInference;
  }
}
