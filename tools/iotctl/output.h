#pragma once

// How iotctl prints: aligned tables and field lists for people, JSON of the response message
// (proto field names) for scripts, and secrets that are shown exactly once.

#include <google/protobuf/map.h>
#include <google/protobuf/message.h>

#include <cstdio>
#include <iosfwd>
#include <string>
#include <vector>

namespace iotctl {

/// Prints `message` as JSON to stdout: proto field names, fields with default values included
/// (a stable shape for scripts), 64-bit integers as strings (the proto3 JSON mapping).
void PrintJson(const google::protobuf::Message& message);

/// Columns aligned by their widest cell, two spaces apart.
class Table {
 public:
  explicit Table(std::vector<std::string> headers);
  void AddRow(std::vector<std::string> cells);
  [[nodiscard]] bool empty() const { return rows_.empty(); }
  void Print(std::ostream& out) const;

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

/// `label:  value` lines with the values aligned.
class Fields {
 public:
  Fields& Add(std::string label, std::string value);
  void Print(std::ostream& out) const;

 private:
  std::vector<std::pair<std::string, std::string>> fields_;
};

/// "2024-05-01T12:34:56.789Z" -> "2024-05-01 12:34:56 UTC"; "-" for an empty time; anything
/// else unchanged.
std::string ReadableTime(const std::string& rfc3339);

/// `text`, or "-" when empty.
std::string OrDash(const std::string& text);

/// Tags as `k=v,k2=v2`, sorted by key; "-" when there are none.
std::string FormatTags(const google::protobuf::Map<std::string, std::string>& tags);

/// Where a secret that the server shows only once goes: printed, or written to a file (mode
/// 0600) given by --save-secret. The file is opened before the call that creates the secret,
/// so that an unwritable path fails before the secret exists; it is removed again when no
/// secret was written to it.
class SecretSink {
 public:
  explicit SecretSink(const std::string& path);
  ~SecretSink();
  SecretSink(const SecretSink&) = delete;
  SecretSink& operator=(const SecretSink&) = delete;

  [[nodiscard]] bool to_file() const { return file_ != nullptr; }
  /// Writes the secret to the file (saying so on stderr), or prints `<label>: <secret>` and a
  /// reminder to stdout.
  void Show(const std::string& label, const std::string& secret);

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
  bool written_ = false;
};

}  // namespace iotctl
