// Plot data and gnuplot scripts for `brt plot` (PNG through gnuplot's pngcairo terminal):
//   - cumulative cross-entropy: bits per token averaged over tokens 1..i, against position i
//     (the paper's Figure 6), one curve per series;
//   - per-token difference: NLL with the state reset minus NLL with it carried, in bits, against
//     position (the paper's Figure 4), as dots plus a running mean.
// Data series are computed here; RunGnuplot() is the only function that starts a process.
// Pure functions except the file writers and RunGnuplot(); thread-compatible.
#ifndef BRT_CLIENT_CORE_PLOT_H_
#define BRT_CLIENT_CORE_PLOT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace brt::client {

// c[i] = (nll[0] + ... + nll[i]) / (i + 1) / ln 2: bits per token over the first i+1 tokens.
std::vector<double> CumulativeBitsPerToken(const std::vector<double>& nll_nats);

// Mean over a centred window of `window` values (shrunk at the ends). window <= 1: a copy.
std::vector<double> RunningMean(const std::vector<double>& v, size_t window);

// At most about `max_points` indices into [0, n), increasing, always with the first and last,
// evenly spaced plus a logarithmic set near the start (so a log-x axis keeps its left part).
std::vector<size_t> PlotIndices(size_t n, size_t max_points);

// Writes "x y" rows for the given indices.
absl::Status WriteXY(const std::string& path, const std::vector<double>& x,
                     const std::vector<double>& y, const std::vector<size_t>& indices);

struct PlotSeries {
  std::string data_path;  // "x y" rows
  std::string label;
  std::string style;  // gnuplot style, e.g. "lines lw 2" or "dots"
  std::string color;  // e.g. "#1f77b4"
};

struct PlotSpec {
  std::string out_png;
  std::string title;
  std::string xlabel, ylabel;
  int width = 1200, height = 700;
  bool logx = false;
  bool zero_line = false;
  // Fixed y range when ymin < ymax; else gnuplot's autoscale.
  double ymin = 0, ymax = 0;
  std::vector<PlotSeries> series;
};

// A y range for curves that start noisy (a running average over few tokens): the span of the values
// after the first `skip` of each, padded by 8%, so the settled part fills the plot (the first
// points may leave it). Returns false when there are no such values.
bool FocusedRange(const std::vector<std::vector<double>>& curves, size_t skip, double* lo,
                  double* hi);

// A gnuplot script that writes spec.out_png.
std::string GnuplotScript(const PlotSpec& spec);
// Panels stacked top to bottom in one image; the first panel's out_png, width and height apply.
std::string GnuplotScript(const std::vector<PlotSpec>& panels);

// Runs `gnuplot script_path` (no shell). Errors: NOT_FOUND when the program is missing,
// INTERNAL when it fails (its stderr goes to ours).
absl::Status RunGnuplot(const std::string& gnuplot, const std::string& script_path);

// OK when `path` starts with the PNG signature and an IHDR chunk; sets width and height.
absl::Status CheckPng(const std::string& path, uint32_t* width, uint32_t* height);

}  // namespace brt::client

#endif  // BRT_CLIENT_CORE_PLOT_H_
