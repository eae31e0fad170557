// brt plot: PNG figures from per-token outputs, drawn with gnuplot.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "client/commands/commands.h"
#include "client/commands/common.h"
#include "client/core/compare.h"
#include "client/core/plot.h"
#include "client/core/token_table.h"

namespace brt::client {
namespace {

constexpr const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c",
                                   "#9467bd", "#ff7f0e", "#8c564b"};

struct Input {
  std::string name;
  TokenTable table;
  std::string reset_label = "state reset";
};

std::string Basename(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

absl::StatusOr<Input> LoadInput(const std::string& path) {
  absl::StatusOr<std::string> content = ReadWholeFile(path);
  if (!content.ok()) return content.status();
  Input in;
  in.name = Basename(path);
  nlohmann::json j = nlohmann::json::parse(*content, nullptr, false);
  if (!j.is_discarded() && j.is_object() && !j.contains("nll")) {
    if (j.contains("per_token")) {
      absl::StatusOr<TokenTable> t = TokenTableFromCompareJson(j);
      if (!t.ok())
        return absl::InvalidArgumentError(absl::StrCat(path, ": ", t.status().message()));
      in.table = *std::move(t);
      if (j.contains("file") && j["file"].is_string()) in.name = Basename(j["file"]);
      if (j.contains("reset_every_blocks")) {
        in.reset_label =
            absl::StrCat("state reset every ", j["reset_every_blocks"].dump(), " blocks");
      }
      return in;
    }
    return absl::InvalidArgumentError(absl::StrCat(
        path,
        " has no per-token data: plot a `brt score --tokens PATH` table, a `brt compare "
        "--tokens PATH` table, or `brt compare --json` output"));
  }
  absl::StatusOr<TokenTable> t = ParseTokenTable(*content, path);
  if (!t.ok()) return t.status();
  in.table = *std::move(t);
  if (in.table.rows.empty())
    return absl::InvalidArgumentError(absl::StrCat(path, " has no tokens"));
  return in;
}

// Removes the temporary files on every path out.
struct TempDir {
  std::string path;
  std::vector<std::string> files;
  std::string File(const std::string& name) {
    files.push_back(path + "/" + name);
    return files.back();
  }
  ~TempDir() {
    for (const std::string& f : files) std::remove(f.c_str());
    if (!path.empty()) rmdir(path.c_str());
  }
};

}  // namespace

int RunPlot(const Args& args) {
  std::string out = "brt-plot", title, gnuplot = "gnuplot";
  int64_t width = 1200, height = 700, smooth = 0, max_points = 4000;
  bool logx = false, full_range = false;
  std::vector<std::string> inputs;
  ArgParser parser(
      "brt plot", "[options] INPUT...",
      "Draws PNG figures from per-token results:\n"
      "  PREFIX-cumulative.png  cumulative cross-entropy: bits per token averaged over tokens "
      "1..i,\n"
      "                         against position i (the paper's Figure 6); one curve per input, "
      "two\n"
      "                         (carried and reset) for a compare input;\n"
      "  PREFIX-difference.png  per-token NLL with the state reset minus with it carried, in "
      "bits,\n"
      "                         against position, and below it their running mean on its own\n"
      "                         scale (the paper's Figure 4);\n"
      "                         only for compare inputs.\n"
      "Needs gnuplot (Debian package gnuplot-nox).");
  parser.SetPositionals(
      &inputs, 1, -1,
      "INPUT...  `brt score --tokens` / `brt compare --tokens` tables (TSV or JSON "
      "Lines) or `brt compare --json` output");
  parser.AddString("out", &out, "PREFIX", "output file prefix");
  parser.AddString("title", &title, "TEXT", "title prefix (default: the input names)");
  parser.AddFlag("logx", &logx, "logarithmic position axis on the cumulative plot");
  parser.AddFlag("full_range", &full_range,
                 "y axis of the cumulative plot over all values (default: framed on the curves "
                 "after their first 2% or 500 tokens, whose early averages swing widely)");
  parser.AddInt("smooth", &smooth, "running-mean window (tokens) of the difference plot; 0: auto");
  parser.AddInt("max_points", &max_points, "points per cumulative curve");
  parser.AddInt("width", &width, "image width in pixels");
  parser.AddInt("height", &height,
                "image height in pixels (the difference image, two panels, is 1.5 times as tall)");
  parser.AddString("gnuplot", &gnuplot, "PATH", "gnuplot program");
  if (std::optional<int> exit = ParseOrExit(parser, args)) return *exit;
  if (width < 200 || height < 150 || width > 10000 || height > 10000) {
    return UsageError("brt plot", "--width/--height must be in [200, 10000] x [150, 10000]");
  }
  if (smooth < 0 || max_points < 10) {
    return UsageError("brt plot", "--smooth must be >= 0 and --max_points >= 10");
  }

  std::vector<Input> loaded;
  for (const std::string& path : inputs) {
    absl::StatusOr<Input> in = LoadInput(path);
    if (!in.ok()) return Fail(in.status());
    loaded.push_back(*std::move(in));
  }

  TempDir tmp;
  char templ[] = "/tmp/brt-plot-XXXXXX";
  if (mkdtemp(templ) == nullptr)
    return Fail(absl::InternalError("cannot make a temporary directory"));
  tmp.path = templ;

  std::string names;
  for (const Input& in : loaded) absl::StrAppend(&names, names.empty() ? "" : ", ", in.name);
  const std::string title_prefix = title.empty() ? names : title;

  // Cumulative cross-entropy (Figure 6).
  PlotSpec cum;
  cum.out_png = out + "-cumulative.png";
  cum.title = title_prefix + ": cumulative cross-entropy";
  cum.xlabel = "token position";
  cum.ylabel = "bits per token, averaged over tokens up to the position";
  cum.width = static_cast<int>(width);
  cum.height = static_cast<int>(height);
  cum.logx = logx;
  size_t color = 0;
  std::vector<std::vector<double>> curves;
  const auto add_curve = [&](const Input& in, bool reset,
                             const std::string& label) -> absl::Status {
    std::vector<double> x, nll;
    for (const TokenRow& r : in.table.rows) {
      x.push_back(static_cast<double>(r.position));
      nll.push_back(reset ? r.nll_reset.value_or(0) : r.nll);
    }
    const std::vector<double> y = CumulativeBitsPerToken(nll);
    curves.push_back(y);
    const std::string data = tmp.File(absl::StrCat("cum", cum.series.size(), ".dat"));
    if (absl::Status s = WriteXY(data, x, y, PlotIndices(x.size(), max_points)); !s.ok()) return s;
    cum.series.push_back({data, label, "lines lw 2", kColors[color++ % 6]});
    return absl::OkStatus();
  };
  for (const Input& in : loaded) {
    const std::string prefix = loaded.size() > 1 ? in.name + ": " : "";
    if (absl::Status s =
            add_curve(in, false, prefix + (in.table.has_reset ? "state carried" : in.name));
        !s.ok()) {
      return Fail(s);
    }
    if (in.table.has_reset) {
      if (absl::Status s = add_curve(in, true, prefix + in.reset_label); !s.ok()) return Fail(s);
    }
  }
  // The first averages (over a handful of tokens) swing widely; unless the axis is logarithmic,
  // frame the y axis on the rest so the differences between curves show.
  if (!logx && !full_range) {
    size_t n = 0;
    for (const auto& c : curves) n = std::max(n, c.size());
    FocusedRange(curves, std::min<size_t>(n / 50, 500), &cum.ymin, &cum.ymax);
  }
  std::vector<std::vector<PlotSpec>> plots = {{cum}};  // images, each of stacked panels

  // Per-token difference, reset minus carried (Figure 4): one plot per compare input.
  for (size_t k = 0; k < loaded.size(); ++k) {
    const Input& in = loaded[k];
    if (!in.table.has_reset) continue;
    PlotSpec diff;
    diff.out_png = loaded.size() > 1 ? absl::StrCat(out, "-difference-", k + 1, ".png")
                                     : out + "-difference.png";
    diff.title = (title.empty() ? in.name : title) +
                 ": per-token NLL difference, reset minus carried (> 0: the carried state helps)";
    diff.xlabel = "token position";
    diff.ylabel = "NLL(reset) - NLL(carried), bits";
    diff.width = static_cast<int>(width);
    diff.height = static_cast<int>(height) * 3 / 2;
    diff.zero_line = true;
    std::vector<double> x, d;
    for (const TokenRow& r : in.table.rows) {
      x.push_back(static_cast<double>(r.position));
      d.push_back((r.nll_reset.value_or(0) - r.nll) / std::log(2.0));
    }
    const size_t window =
        smooth > 0 ? static_cast<size_t>(smooth) : std::max<size_t>(16, x.size() / 100);
    const std::vector<double> mean = RunningMean(d, window);
    const std::string dots = tmp.File(absl::StrCat("diff", k, ".dat"));
    const std::string line = tmp.File(absl::StrCat("mean", k, ".dat"));
    if (absl::Status s = WriteXY(dots, x, d, PlotIndices(x.size(), 200000)); !s.ok())
      return Fail(s);
    if (absl::Status s = WriteXY(line, x, mean, PlotIndices(x.size(), max_points)); !s.ok()) {
      return Fail(s);
    }
    diff.series.push_back({dots, "per token", "points pt 7 ps 0.25", "#7f9fbf"});
    // The running mean is some tenths of a bit while single tokens differ by up to ~15 bits, so it
    // gets its own panel and scale below the dots.
    PlotSpec mean_panel = diff;
    mean_panel.title = "";
    mean_panel.series = {{line,
                          absl::StrCat("running mean of the difference over ", window, " tokens"),
                          "lines lw 2", "#d62728"}};
    diff.xlabel = "";
    plots.push_back({diff, mean_panel});
  }

  for (size_t i = 0; i < plots.size(); ++i) {
    const std::string script = tmp.File(absl::StrCat("plot", i, ".gp"));
    FILE* f = std::fopen(script.c_str(), "w");
    if (f == nullptr) return Fail(absl::InternalError(absl::StrCat("cannot write ", script)));
    const std::string text = GnuplotScript(plots[i]);
    std::fwrite(text.data(), 1, text.size(), f);
    std::fclose(f);
    if (absl::Status s = RunGnuplot(gnuplot, script); !s.ok()) return Fail(s);
    uint32_t w = 0, h = 0;
    const std::string& png = plots[i].front().out_png;
    if (absl::Status s = CheckPng(png, &w, &h); !s.ok()) return Fail(s);
    std::printf("%s (%ux%u)\n", png.c_str(), w, h);
  }
  return 0;
}

}  // namespace brt::client
