#include "output.h"

#include <fcntl.h>
#include <google/protobuf/util/json_util.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "cli.h"

namespace iotctl {
namespace {

/// Display width in terminal columns, counting UTF-8 code points (not bytes).
size_t Width(const std::string& text) {
  return static_cast<size_t>(std::count_if(text.begin(), text.end(), [](char c) {
    return (static_cast<unsigned char>(c) & 0xC0U) != 0x80U;
  }));
}

void Pad(std::ostream& out, const std::string& text, size_t width) {
  out << text;
  for (size_t w = Width(text); w < width; ++w) {
    out << ' ';
  }
}

}  // namespace

void PrintJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string json;
  if (const auto status = google::protobuf::util::MessageToJsonString(message, &json, options);
      !status.ok()) {
    throw Failure(kExitServerError, "cannot print the response as JSON: " + status.ToString());
  }
  // Re-indented for people reading it too; ordered_json keeps the proto field order.
  std::cout << nlohmann::ordered_json::parse(json).dump(2) << "\n";
}

Table::Table(std::vector<std::string> headers) : headers_(std::move(headers)) {}

void Table::AddRow(std::vector<std::string> cells) {
  cells.resize(headers_.size());
  rows_.push_back(std::move(cells));
}

void Table::Print(std::ostream& out) const {
  std::vector<size_t> widths(headers_.size());
  for (size_t i = 0; i < headers_.size(); ++i) {
    widths[i] = Width(headers_[i]);
    for (const auto& row : rows_) {
      widths[i] = std::max(widths[i], Width(row[i]));
    }
  }
  auto print_row = [&](const std::vector<std::string>& cells) {
    for (size_t i = 0; i < cells.size(); ++i) {
      if (i + 1 == cells.size()) {
        out << cells[i];
      } else {
        Pad(out, cells[i], widths[i] + 2);
      }
    }
    out << "\n";
  };
  print_row(headers_);
  for (const auto& row : rows_) {
    print_row(row);
  }
}

Fields& Fields::Add(std::string label, std::string value) {
  fields_.emplace_back(std::move(label), std::move(value));
  return *this;
}

void Fields::Print(std::ostream& out) const {
  size_t width = 0;
  for (const auto& field : fields_) {
    width = std::max(width, Width(field.first) + 1);
  }
  for (const auto& [label, value] : fields_) {
    Pad(out, label + ":", width + 2);
    out << value << "\n";
  }
}

std::string ReadableTime(const std::string& rfc3339) {
  if (rfc3339.empty()) {
    return "-";
  }
  // YYYY-MM-DDTHH:MM:SS[.fff]Z
  if (rfc3339.size() >= 20 && rfc3339[10] == 'T' && rfc3339.back() == 'Z') {
    return rfc3339.substr(0, 10) + " " + rfc3339.substr(11, 8) + " UTC";
  }
  return rfc3339;
}

std::string OrDash(const std::string& text) { return text.empty() ? "-" : text; }

std::string FormatTags(const google::protobuf::Map<std::string, std::string>& tags) {
  if (tags.empty()) {
    return "-";
  }
  const std::map<std::string, std::string> sorted(tags.begin(), tags.end());
  std::string out;
  for (const auto& [key, value] : sorted) {
    if (!out.empty()) {
      out += ",";
    }
    out += key + "=" + value;
  }
  return out;
}

SecretSink::SecretSink(const std::string& path) : path_(path) {
  if (path.empty()) {
    return;
  }
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    throw Failure(kExitUsage, "cannot write the secret file " + path + ": " + std::strerror(errno));
  }
  ::fchmod(fd, 0600);  // an existing file keeps its mode on O_CREAT
  file_ = ::fdopen(fd, "w");
  if (file_ == nullptr) {
    ::close(fd);
    throw Failure(kExitUsage, "cannot write the secret file " + path + ": " + std::strerror(errno));
  }
}

SecretSink::~SecretSink() {
  if (file_ != nullptr) {
    std::fclose(file_);
    if (!written_) {
      ::unlink(path_.c_str());
    }
  }
}

void SecretSink::Show(const std::string& label, const std::string& secret) {
  if (file_ == nullptr) {
    std::cout << label << ": " << secret << "\n"
              << "(shown once: store it now, it cannot be read back)\n";
    return;
  }
  const std::string line = secret + "\n";
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fflush(file_) != 0) {
    // The secret exists only in this process now: print it rather than lose it.
    std::cerr << "error: cannot write the secret file " << path_ << "; " << label << ": " << secret
              << "\n";
    throw Failure(kExitServerError, {});
  }
  written_ = true;
  std::cerr << label << " written to " << path_ << "\n";
}

}  // namespace iotctl
