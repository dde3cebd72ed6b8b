// Fuzz target of the binary's input handling (tfanomaly/inputs.h): the PNG
// header check, the .npy parser and the region id of a file name, on one input.
// Any exception other than tfanomaly::Error, and any sanitizer report, is a
// crash. Built and run by cpp_inference/fuzz/run.sh (AFL++, ASan + UBSan); the
// test suite builds it with plain g++ and the sanitizers and replays a corpus.
//
//   fuzz_inputs FILE...   runs each file (replay); with no file, reads stdin once
//   (AFL++'s persistent mode when built with afl-g++-fast / afl-clang-fast++)
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "tfanomaly/inputs.h"

#ifndef __AFL_FUZZ_TESTCASE_LEN
static std::string ReadAll(std::istream& in) {
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
#else
#include <unistd.h>  // read(), used by AFL++'s persistent-mode macros
__AFL_FUZZ_INIT();
#endif

static void One(const std::string& bytes) {
  for (int channels : {1, 3}) {
    tfanomaly::ModelInfo info;
    info.height = 32;
    info.width = 48;
    info.channels = channels;
    for (bool whole : {false, true}) {
      bool unreadable = false;
      (void)tfanomaly::CheckPng(bytes, info, whole, &unreadable);
      int n = 0, h = 0, w = 0;
      try {
        auto v = tfanomaly::ParseNpy(bytes, "input.npy", info, whole, &n, &h, &w);
        const size_t per = whole ? static_cast<size_t>(h) * w * channels : static_cast<size_t>(info.height) * info.width * channels;
        if (v.size() != per * static_cast<size_t>(n)) __builtin_trap();  // the parser's own promise
      } catch (const tfanomaly::Error&) {
      }
    }
  }
  try {
    (void)tfanomaly::RegionOf(bytes);
  } catch (const tfanomaly::Error&) {
  }
}

int main(int argc, char** argv) {
#ifdef __AFL_FUZZ_TESTCASE_LEN
  const unsigned char* buf = __AFL_FUZZ_TESTCASE_BUF;
  while (__AFL_LOOP(100000)) {
    One(std::string(reinterpret_cast<const char*>(buf), __AFL_FUZZ_TESTCASE_LEN));
  }
  return 0;
#else
  if (argc == 1) {
    One(ReadAll(std::cin));
    return 0;
  }
  for (int i = 1; i < argc; ++i) {
    std::ifstream f(argv[i], std::ios::binary);
    if (!f) {
      std::cerr << "cannot read " << argv[i] << "\n";
      return 2;
    }
    One(ReadAll(f));
  }
  std::cout << "ran " << argc - 1 << " inputs\n";
  return 0;
#endif
}
