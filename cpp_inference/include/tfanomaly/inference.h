// tfanomaly C++ inference: load a SavedModel exported by `tfanomaly export`
// and run its signatures on batches of float images or PNG buffers.
//
//   tfanomaly::Model model = tfanomaly::Model::Load("saved_models/vials");
//   tfanomaly::Result r = model.RunPng(pngs, &regions);  // regions only for per-region models
//   tfanomaly::StripVerdict v = tfanomaly::AggregateStrip(r, 0, r.size());
//
// Every failure throws tfanomaly::Error with an exit code from ErrorCode.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace tfanomaly {

// Exit codes of tfanomaly-infer (documented in the README).
enum ErrorCode : int {
  kOk = 0,
  kUsage = 2,           // bad command line
  kModelMissing = 3,    // no such model directory, or no saved_model.pb in it
  kModelInvalid = 4,    // the model does not load, or lacks the expected signature/outputs
  kImageUnreadable = 5, // an input file cannot be read or decoded
  kImageShape = 6,      // an input image has the wrong size or channel count
  kInference = 7,       // TensorFlow failed while running the model
  kOutput = 8,          // an output file cannot be written
};

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& msg) : std::runtime_error(msg), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

struct ModelInfo {
  int height = 0, width = 0, channels = 0;
  bool has_png = false;         // a serve_png signature exists
  bool per_region = false;      // the signatures take a region id per image
  bool has_decisions = false;   // an is_anomalous output exists (calibrated thresholds)
  bool has_whole_image = false; // serve_image / serve_image_png exist (tiled models: any image size)
};

// Outputs of one batch, row-major: heatmaps [B, H, W], reconstructions [B, H, W, C];
// heatmap_shapes[i] = {H, W} of image i's heatmap (whole images differ in size).
struct Result {
  std::vector<float> scores;
  std::vector<uint8_t> is_anomalous;  // empty when the model has no thresholds
  std::vector<float> heatmaps;
  std::vector<float> reconstructions;
  std::vector<std::pair<int, int>> heatmap_shapes;
  size_t size() const { return scores.size(); }
  void Append(const Result& other);
};

struct StripVerdict {
  float max_score = 0.f;
  int flagged_patches = 0;    // flagged by the model's thresholds, or not finite
  int nonfinite_patches = 0;  // scores that are NaN or inf: always flagged (fail closed)
  bool defective = false;  // any patch flagged (the per-run rule of the line)
};

// Per strip (one acquisition run): max score over patches [begin, end); flagged when any patch is.
StripVerdict AggregateStrip(const Result& r, size_t begin, size_t end);
// Per product over runs: defective when at least k of its n runs are (k scales to the runs present).
bool KOfN(const std::vector<StripVerdict>& runs, int k, int n);

class Model {
 public:
  static Model Load(const std::string& dir);
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  ~Model();

  const ModelInfo& info() const;
  // images: B * H * W * C floats in [0, 1]; regions: B ids (required for per-region models).
  Result RunFloat(const std::vector<float>& images, int batch, const std::vector<int32_t>* regions = nullptr) const;
  // pngs: encoded 8-bit PNGs of exactly H x W x C.
  Result RunPng(const std::vector<std::string>& pngs, const std::vector<int32_t>* regions = nullptr) const;
  // Whole images of any size (tiled models, serve_image / serve_image_png): the
  // graph scales, tiles and stitches; one score (max over tiles) and one heatmap
  // at the scaled image's size. image: height * width * C floats in [0, 1].
  Result RunImage(const std::vector<float>& image, int height, int width, const int32_t* region = nullptr) const;
  Result RunImagePng(const std::string& png, const int32_t* region = nullptr) const;

 private:
  struct Impl;
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tfanomaly
