#include "guest/file_bytes.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace witmq::guest {

Result<std::vector<uint8_t>> read_regular_file(const std::string& path, uint64_t max_bytes,
                                               Symlinks symlinks) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
  const int flags =
      O_RDONLY | O_CLOEXEC | O_NONBLOCK | (symlinks == Symlinks::kRefuse ? O_NOFOLLOW : 0);
  const int fd = ::open(path.c_str(), flags);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return Error(ErrorCode::kNotFound, "'" + path + "' does not exist");
    if (err == ELOOP && symlinks == Symlinks::kRefuse) {
      return Error(ErrorCode::kInvalidArgument,
                   "'" + path + "' is a symbolic link, where a regular file was expected");
    }
    return Error(ErrorCode::kIoError, "'" + path + "': cannot open it: " + std::strerror(err));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    return Error(ErrorCode::kIoError, "'" + path + "': " + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) {
    return Error(ErrorCode::kInvalidArgument,
                 "'" + path + "' is not a regular file (a directory, FIFO, socket or device)");
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    return Error(ErrorCode::kInvalidArgument, "'" + path + "' is " + std::to_string(st.st_size) +
                                                  " bytes, more than the " +
                                                  std::to_string(max_bytes) + " allowed");
  }
  // Read to the end, in case it grew since fstat, but never past max_bytes.
  std::vector<uint8_t> out(static_cast<size_t>(st.st_size));
  size_t done = 0;
  for (;;) {
    if (done == out.size()) {
      if (out.size() > max_bytes) {
        return Error(ErrorCode::kInvalidArgument, "'" + path + "' grew past the " +
                                                      std::to_string(max_bytes) +
                                                      " bytes allowed while it was read");
      }
      out.resize(out.size() + 4096);
    }
    const ssize_t n = ::read(fd, out.data() + done, out.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      return Error(ErrorCode::kIoError, "'" + path + "': read failed: " + std::strerror(errno));
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  out.resize(done);
  return out;
}

}  // namespace witmq::guest
