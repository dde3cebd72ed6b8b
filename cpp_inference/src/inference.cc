// tfanomaly C++ inference library (see include/tfanomaly/inference.h).
#include "tfanomaly/inference.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "tensorflow/cc/saved_model/loader.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/public/session.h"

namespace tfanomaly {

namespace {

// tag_constants.h / signature_constants.h are not in the pip wheel.
constexpr char kServeTag[] = "serve";
constexpr char kDefaultSignature[] = "serving_default";
constexpr char kPngSignature[] = "serve_png";
constexpr char kImageSignature[] = "serve_image";
constexpr char kImagePngSignature[] = "serve_image_png";

bool IsFile(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}
bool IsDir(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

struct Sig {
  std::string images;                  // tensor name of the image (or png) input
  std::string region;                  // tensor name of the region input, "" if none
  std::vector<std::string> out_keys;   // sorted output keys
  std::vector<std::string> out_names;  // tensor names, same order
};

Sig ReadSignature(const tensorflow::SignatureDef& def, const std::string& image_key) {
  Sig s;
  auto it = def.inputs().find(image_key);
  if (it == def.inputs().end()) throw Error(kModelInvalid, "signature has no input '" + image_key + "'");
  s.images = it->second.name();
  auto r = def.inputs().find("region");
  if (r != def.inputs().end()) s.region = r->second.name();
  std::vector<std::string> keys;
  for (const auto& kv : def.outputs()) keys.push_back(kv.first);
  std::sort(keys.begin(), keys.end());  // look outputs up by key, never by index
  for (const auto& k : {"heatmap", "reconstruction", "score"}) {
    if (!std::binary_search(keys.begin(), keys.end(), std::string(k)))
      throw Error(kModelInvalid, std::string("signature has no output '") + k + "'");
  }
  for (const auto& k : keys) {
    s.out_keys.push_back(k);
    s.out_names.push_back(def.outputs().at(k).name());
  }
  return s;
}

}  // namespace

void Result::Append(const Result& o) {
  scores.insert(scores.end(), o.scores.begin(), o.scores.end());
  is_anomalous.insert(is_anomalous.end(), o.is_anomalous.begin(), o.is_anomalous.end());
  heatmaps.insert(heatmaps.end(), o.heatmaps.begin(), o.heatmaps.end());
  reconstructions.insert(reconstructions.end(), o.reconstructions.begin(), o.reconstructions.end());
  heatmap_shapes.insert(heatmap_shapes.end(), o.heatmap_shapes.begin(), o.heatmap_shapes.end());
}

StripVerdict AggregateStrip(const Result& r, size_t begin, size_t end) {
  StripVerdict v;
  v.max_score = -INFINITY;
  for (size_t i = begin; i < end && i < r.size(); ++i) {
    // fail closed: a patch that could not be scored (NaN / inf) raises the maximum and flags the strip
    const bool finite = std::isfinite(r.scores[i]);
    v.max_score = finite ? std::max(v.max_score, r.scores[i]) : INFINITY;
    if (!finite) ++v.nonfinite_patches;
    if ((!r.is_anomalous.empty() && r.is_anomalous[i]) || !finite) ++v.flagged_patches;
  }
  v.defective = v.flagged_patches > 0;
  return v;
}

bool KOfN(const std::vector<StripVerdict>& runs, int k, int n) {
  int flagged = 0;
  for (const auto& r : runs) flagged += r.defective ? 1 : 0;
  const int m = static_cast<int>(runs.size());
  const int need = (m == n) ? k : static_cast<int>(std::ceil(static_cast<double>(k) * m / n));
  return flagged >= need;
}

struct Model::Impl {
  tensorflow::SavedModelBundle bundle;
  ModelInfo info;
  Sig dense, png, image, image_png;

  // batch < 0: one whole image, the region input is a scalar.
  Result Run(const tensorflow::Tensor& input, const std::string& input_name, const Sig& sig,
             const std::vector<int32_t>* regions, int64_t batch) const {
    std::vector<std::pair<std::string, tensorflow::Tensor>> feeds = {{input_name, input}};
    if (!sig.region.empty()) {
      const int64_t n = batch < 0 ? 1 : batch;
      if (regions == nullptr || static_cast<int64_t>(regions->size()) != n)
        throw Error(kUsage, "this model has per-region thresholds: give one region id per image");
      tensorflow::Tensor reg(tensorflow::DT_INT32, batch < 0 ? tensorflow::TensorShape({}) : tensorflow::TensorShape({batch}));
      std::copy(regions->begin(), regions->end(), reg.flat<int32_t>().data());
      feeds.emplace_back(sig.region, reg);
    }
    std::vector<tensorflow::Tensor> outs;
    auto status = bundle.session->Run(feeds, sig.out_names, {}, &outs);
    if (!status.ok()) {
      std::string msg(status.message());
      auto nl = msg.find('\n');
      if (nl != std::string::npos) msg = msg.substr(0, nl);
      if (msg.find("Shapes of all inputs") != std::string::npos || msg.find("ensure_shape") != std::string::npos ||
          msg.find("EnsureShape") != std::string::npos || msg.find("is not compatible with") != std::string::npos)
        throw Error(kImageShape, "wrong image size or channels: " + msg);
      if (msg.find("decode") != std::string::npos || msg.find("PNG") != std::string::npos || msg.find("png") != std::string::npos)
        throw Error(kImageUnreadable, "cannot decode image: " + msg);
      throw Error(kInference, "inference failed: " + msg);
    }
    Result r;
    for (size_t i = 0; i < sig.out_keys.size(); ++i) {
      const auto& key = sig.out_keys[i];
      const auto& t = outs[i];
      if (key == "score") {
        auto f = t.flat<float>();
        r.scores.assign(f.data(), f.data() + f.size());
      } else if (key == "heatmap") {  // [B, H, W, 1]
        auto f = t.flat<float>();
        r.heatmaps.assign(f.data(), f.data() + f.size());
        if (t.dims() != 4) throw Error(kModelInvalid, "heatmap output is not [B, H, W, 1]");
        for (int64_t b = 0; b < t.dim_size(0); ++b)
          r.heatmap_shapes.emplace_back(static_cast<int>(t.dim_size(1)), static_cast<int>(t.dim_size(2)));
      } else if (key == "reconstruction") {
        auto f = t.flat<float>();
        r.reconstructions.assign(f.data(), f.data() + f.size());
      } else if (key == "is_anomalous") {
        auto f = t.flat<bool>();
        r.is_anomalous.resize(f.size());
        for (int64_t j = 0; j < f.size(); ++j) r.is_anomalous[j] = f(j) ? 1 : 0;
      }
    }
    return r;
  }
};

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;
Model::~Model() = default;
const ModelInfo& Model::info() const { return impl_->info; }

Model Model::Load(const std::string& dir) {
  if (!IsDir(dir)) throw Error(kModelMissing, "no such model directory: " + dir);
  if (!IsFile(dir + "/saved_model.pb")) throw Error(kModelMissing, "not a SavedModel (no saved_model.pb): " + dir);
  auto impl = std::make_unique<Impl>();
  tensorflow::SessionOptions opts;
  tensorflow::RunOptions run_opts;
  auto status = tensorflow::LoadSavedModel(opts, run_opts, dir, {kServeTag}, &impl->bundle);
  if (!status.ok()) throw Error(kModelInvalid, "cannot load " + dir + ": " + std::string(status.message()));
  const auto& sigs = impl->bundle.GetSignatures();
  auto d = sigs.find(kDefaultSignature);
  if (d == sigs.end()) throw Error(kModelInvalid, "model has no 'serving_default' signature: " + dir);
  impl->dense = ReadSignature(d->second, "images");
  const auto& shape = d->second.inputs().at("images").tensor_shape();
  if (shape.dim_size() != 4) throw Error(kModelInvalid, "serving_default input 'images' is not [B, H, W, C]");
  impl->info.height = static_cast<int>(shape.dim(1).size());
  impl->info.width = static_cast<int>(shape.dim(2).size());
  impl->info.channels = static_cast<int>(shape.dim(3).size());
  impl->info.per_region = !impl->dense.region.empty();
  impl->info.has_decisions =
      std::find(impl->dense.out_keys.begin(), impl->dense.out_keys.end(), "is_anomalous") != impl->dense.out_keys.end();
  auto p = sigs.find(kPngSignature);
  if (p != sigs.end()) {
    impl->png = ReadSignature(p->second, "png");
    impl->info.has_png = true;
  }
  auto wi = sigs.find(kImageSignature), wp = sigs.find(kImagePngSignature);
  if (wi != sigs.end() && wp != sigs.end()) {
    impl->image = ReadSignature(wi->second, "image");
    impl->image_png = ReadSignature(wp->second, "png");
    impl->info.has_whole_image = true;
  }
  return Model(std::move(impl));
}

Result Model::RunFloat(const std::vector<float>& images, int batch, const std::vector<int32_t>* regions) const {
  const auto& i = impl_->info;
  const size_t per = static_cast<size_t>(i.height) * i.width * i.channels;
  if (batch <= 0 || images.size() != per * static_cast<size_t>(batch))
    throw Error(kImageShape, "expected " + std::to_string(batch) + " images of " + std::to_string(i.height) + "x" +
                                 std::to_string(i.width) + "x" + std::to_string(i.channels) + " floats");
  tensorflow::Tensor t(tensorflow::DT_FLOAT, tensorflow::TensorShape({batch, i.height, i.width, i.channels}));
  std::memcpy(t.flat<float>().data(), images.data(), images.size() * sizeof(float));
  return impl_->Run(t, impl_->dense.images, impl_->dense, regions, batch);
}

Result Model::RunPng(const std::vector<std::string>& pngs, const std::vector<int32_t>* regions) const {
  if (!impl_->info.has_png) throw Error(kModelInvalid, "model has no 'serve_png' signature");
  const int64_t b = static_cast<int64_t>(pngs.size());
  tensorflow::Tensor t(tensorflow::DT_STRING, tensorflow::TensorShape({b}));
  auto flat = t.flat<tensorflow::tstring>();
  for (int64_t j = 0; j < b; ++j) flat(j) = pngs[j];
  return impl_->Run(t, impl_->png.images, impl_->png, regions, b);
}

namespace {
const char kNoWhole[] = "model has no whole-image signatures (serve_image): export a run trained with data.tiling";
}

Result Model::RunImage(const std::vector<float>& image, int height, int width, const int32_t* region) const {
  const auto& i = impl_->info;
  if (!i.has_whole_image) throw Error(kModelInvalid, kNoWhole);
  if (height <= 0 || width <= 0 || image.size() != static_cast<size_t>(height) * width * i.channels)
    throw Error(kImageShape, "expected " + std::to_string(height) + "x" + std::to_string(width) + "x" + std::to_string(i.channels) + " floats");
  tensorflow::Tensor t(tensorflow::DT_FLOAT, tensorflow::TensorShape({height, width, i.channels}));
  std::memcpy(t.flat<float>().data(), image.data(), image.size() * sizeof(float));
  std::vector<int32_t> reg;
  if (region != nullptr) reg.push_back(*region);
  return impl_->Run(t, impl_->image.images, impl_->image, region ? &reg : nullptr, -1);
}

Result Model::RunImagePng(const std::string& png, const int32_t* region) const {
  if (!impl_->info.has_whole_image) throw Error(kModelInvalid, kNoWhole);
  tensorflow::Tensor t(tensorflow::DT_STRING, tensorflow::TensorShape({}));
  t.scalar<tensorflow::tstring>()() = png;
  std::vector<int32_t> reg;
  if (region != nullptr) reg.push_back(*region);
  return impl_->Run(t, impl_->image_png.images, impl_->image_png, region ? &reg : nullptr, -1);
}

}  // namespace tfanomaly
