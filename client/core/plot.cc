#include "client/core/plot.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"

extern char** environ;

namespace brt::client {
namespace {

// A gnuplot single-quoted string (a quote inside is doubled).
std::string Quote(const std::string& s) {
  return absl::StrCat("'", absl::StrReplaceAll(s, {{"'", "''"}}), "'");
}

// Text inside gnuplot's enhanced-text labels would treat _ ^ @ & { } as markup; titles are plain.
std::string PlainLabel(const std::string& s) { return Quote(s) + " noenhanced"; }

}  // namespace

std::vector<double> CumulativeBitsPerToken(const std::vector<double>& nll_nats) {
  std::vector<double> out(nll_nats.size());
  double sum = 0;
  for (size_t i = 0; i < nll_nats.size(); ++i) {
    sum += nll_nats[i];
    out[i] = sum / static_cast<double>(i + 1) / std::log(2.0);
  }
  return out;
}

std::vector<double> RunningMean(const std::vector<double>& v, size_t window) {
  if (window <= 1 || v.empty()) return v;
  std::vector<double> prefix(v.size() + 1, 0.0);
  for (size_t i = 0; i < v.size(); ++i) prefix[i + 1] = prefix[i] + v[i];
  std::vector<double> out(v.size());
  const size_t half = window / 2;
  for (size_t i = 0; i < v.size(); ++i) {
    const size_t lo = i >= half ? i - half : 0;
    const size_t hi = std::min(v.size(), i + (window - half));
    out[i] = (prefix[hi] - prefix[lo]) / static_cast<double>(hi - lo);
  }
  return out;
}

std::vector<size_t> PlotIndices(size_t n, size_t max_points) {
  std::vector<size_t> idx;
  if (n == 0) return idx;
  if (n <= max_points || max_points < 4) {
    idx.resize(n);
    for (size_t i = 0; i < n; ++i) idx[i] = i;
    return idx;
  }
  const size_t even = max_points * 3 / 4;
  for (size_t k = 0; k < even; ++k) idx.push_back(k * (n - 1) / (even - 1));
  const size_t logs = max_points - even;
  for (size_t k = 0; k < logs; ++k) {
    idx.push_back(
        static_cast<size_t>(std::pow(static_cast<double>(n - 1), double(k) / (logs - 1))));
  }
  std::sort(idx.begin(), idx.end());
  idx.erase(std::unique(idx.begin(), idx.end()), idx.end());
  return idx;
}

absl::Status WriteXY(const std::string& path, const std::vector<double>& x,
                     const std::vector<double>& y, const std::vector<size_t>& indices) {
  std::ofstream out(path);
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  for (size_t i : indices) out << absl::StrFormat("%.10g %.8g\n", x[i], y[i]);
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat("writing ", path, " failed"));
  return absl::OkStatus();
}

bool FocusedRange(const std::vector<std::vector<double>>& curves, size_t skip, double* lo,
                  double* hi) {
  bool any = false;
  for (const std::vector<double>& c : curves) {
    for (size_t i = std::min(skip, c.size() > 0 ? c.size() - 1 : 0); i < c.size(); ++i) {
      if (!any || c[i] < *lo) *lo = c[i];
      if (!any || c[i] > *hi) *hi = c[i];
      any = true;
    }
  }
  if (!any) return false;
  const double pad = std::max(0.08 * (*hi - *lo), 1e-3);
  *lo -= pad;
  *hi += pad;
  return true;
}

namespace {

// The settings and plot command of one panel.
void AppendPanel(const PlotSpec& spec, std::string& s) {
  absl::StrAppend(&s, "set title ", PlainLabel(spec.title), "\n");
  absl::StrAppend(&s, "set xlabel ", PlainLabel(spec.xlabel), "\n");
  absl::StrAppend(&s, "set ylabel ", PlainLabel(spec.ylabel), "\n");
  absl::StrAppend(&s, spec.logx ? "set logscale x\n" : "unset logscale x\n");
  if (spec.ymin < spec.ymax) {
    absl::StrAppendFormat(&s, "set yrange [%g:%g]\n", spec.ymin, spec.ymax);
  } else {
    absl::StrAppend(&s, "set autoscale y\n");
  }
  absl::StrAppend(
      &s, spec.zero_line ? "set xzeroaxis lt 1 lc rgb '#555555' lw 1\n" : "unset xzeroaxis\n");
  absl::StrAppend(&s, "plot ");
  for (size_t i = 0; i < spec.series.size(); ++i) {
    const PlotSeries& p = spec.series[i];
    if (i > 0) absl::StrAppend(&s, ", \\\n     ");
    absl::StrAppend(&s, Quote(p.data_path), " using 1:2 with ", p.style, " lc rgb ", Quote(p.color),
                    " title ", PlainLabel(p.label));
  }
  absl::StrAppend(&s, "\n");
}

}  // namespace

std::string GnuplotScript(const PlotSpec& spec) {
  return GnuplotScript(std::vector<PlotSpec>{spec});
}

std::string GnuplotScript(const std::vector<PlotSpec>& panels) {
  std::string s;
  if (panels.empty()) return s;
  const PlotSpec& first = panels.front();
  absl::StrAppendFormat(&s, "set terminal pngcairo size %d,%d font 'sans,11'\n", first.width,
                        first.height);
  absl::StrAppend(&s, "set output ", Quote(first.out_png), "\n");
  absl::StrAppend(&s, "set grid lc rgb '#dddddd'\n");
  absl::StrAppend(&s, "set key top right box opaque\n");
  absl::StrAppend(&s, "set format x '%.0f'\n");
  if (panels.size() > 1) {
    // Same left margin in every panel, so their x axes line up.
    absl::StrAppendFormat(&s, "set multiplot layout %d,1\nset lmargin 11\n", panels.size());
  }
  for (const PlotSpec& p : panels) AppendPanel(p, s);
  if (panels.size() > 1) absl::StrAppend(&s, "unset multiplot\n");
  return s;
}

absl::Status RunGnuplot(const std::string& gnuplot, const std::string& script_path) {
  std::vector<std::string> args = {gnuplot, script_path};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  // gnuplot gets the default signal mask (the tool blocks SIGINT/SIGTERM in its own threads).
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  pid_t pid;
  const int rc = posix_spawnp(&pid, gnuplot.c_str(), nullptr, &attr, argv.data(), environ);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    return absl::NotFoundError(absl::StrCat(
        "cannot run ", gnuplot, " (", std::strerror(rc),
        "): brt plot draws with gnuplot; install it (Debian: apt-get install gnuplot-nox) or "
        "pass --gnuplot=PATH"));
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR)
      return absl::InternalError(absl::StrCat("waiting for gnuplot: ", std::strerror(errno)));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127) {
      return absl::NotFoundError(
          absl::StrCat("cannot run ", gnuplot, ": install gnuplot (Debian: gnuplot-nox)"));
    }
    return absl::InternalError(absl::StrCat(gnuplot, " failed on ", script_path));
  }
  return absl::OkStatus();
}

absl::Status CheckPng(const std::string& path, uint32_t* width, uint32_t* height) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, " was not written"));
  unsigned char h[24] = {};
  in.read(reinterpret_cast<char*>(h), sizeof h);
  static const unsigned char kSig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (in.gcount() < 24 || std::memcmp(h, kSig, 8) != 0 || std::memcmp(h + 12, "IHDR", 4) != 0) {
    return absl::DataLossError(absl::StrCat(path, " is not a PNG file"));
  }
  const auto be32 = [](const unsigned char* p) {
    return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
  };
  *width = be32(h + 16);
  *height = be32(h + 20);
  return absl::OkStatus();
}

}  // namespace brt::client
