// What this process (and the children it starts meanwhile) writes to stdout
// and stderr (UCX logs to stdout), caught in a file; end() writes it back to
// stderr as well, so a failing test's log still shows it.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>

namespace rdmaps::test {

class OutputCapture {
 public:
  OutputCapture() {
    std::fflush(stdout);
    std::fflush(stderr);
    file_ = ::mkstemp(path_);
    if (file_ < 0) return;
    for (int fd : {1, 2}) {
      saved_[fd - 1] = ::dup(fd);
      ::dup2(file_, fd);
    }
  }
  ~OutputCapture() { end(); }
  OutputCapture(const OutputCapture&) = delete;
  OutputCapture& operator=(const OutputCapture&) = delete;

  /// What was written so far, still catching.
  std::string text() const {
    if (file_ < 0) return text_;
    std::fflush(stdout);
    std::fflush(stderr);
    std::ifstream in(path_);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  /// Stops catching; returns what was written meanwhile.
  std::string end() {
    if (file_ < 0) return text_;
    std::fflush(stdout);
    std::fflush(stderr);
    for (int fd : {1, 2}) {
      ::dup2(saved_[fd - 1], fd);
      ::close(saved_[fd - 1]);
    }
    ::close(file_);
    file_ = -1;
    std::ifstream in(path_);
    text_.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    ::unlink(path_);
    std::fwrite(text_.data(), 1, text_.size(), stderr);
    return text_;
  }

 private:
  char path_[32] = "/tmp/rdmaps-output-XXXXXX";
  int file_ = -1;
  int saved_[2] = {-1, -1};
  std::string text_;
};

}  // namespace rdmaps::test
