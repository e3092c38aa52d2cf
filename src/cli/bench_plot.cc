#include "cli/bench_plot.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <string_view>
#include <vector>

namespace witmq::cli {
namespace {

constexpr double kWidth = 900;
constexpr double kChartHeight = 330;
constexpr double kLeft = 80, kRight = 30;  // plot area margins inside a chart
constexpr double kTop = 50, kBottom = 50;
constexpr size_t kCurvePoints = 300;   // points of a percentile curve
constexpr size_t kMaxIntervals = 300;  // throughput intervals drawn at most
constexpr const char* kColors[] = {"#2f5fd0", "#d0602f"};

std::string escape(std::string_view text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// A round number (1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 times a power of ten) at least `v`: the top of
// an axis, close enough to the data that it fills most of the chart.
double nice_ceiling(double v) {
  if (!(v > 0)) return 1;
  const double p = std::pow(10.0, std::floor(std::log10(v)));
  for (double m : {1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0}) {
    if (m * p >= v * (1 - 1e-12)) return m * p;
  }
  return 10 * p;
}

std::string number(double v) {
  if (v >= 1e6) return fmt::format("{:.3g}M", v / 1e6);
  if (v >= 1e4) return fmt::format("{:.3g}k", v / 1e3);
  return fmt::format("{:.4g}", v);
}

// "0%", "90%", "99%", "99.9%", ... for 0, 1, 2, 3, ... nines.
std::string nines_label(int nines) {
  if (nines == 0) return "0%";
  if (nines == 1) return "90%";
  if (nines == 2) return "99%";
  return "99." + std::string(static_cast<size_t>(nines - 2), '9') + "%";
}

struct Area {
  double x0, y0, w, h;  // the plot area in the document
  double x_max, y_max;  // the data at its right and top edges
  double x(double v) const { return x0 + w * v / x_max; }
  double y(double v) const { return y0 + h - h * v / y_max; }
};

void frame(std::string& svg, const Area& a, std::string_view id, std::string_view title,
           std::string_view x_title, std::string_view y_title) {
  svg += fmt::format("<g id=\"{}\">\n", id);
  svg += fmt::format("<text class=\"title\" x=\"{}\" y=\"{}\">{}</text>\n", a.x0, a.y0 - 22,
                     escape(title));
  svg += fmt::format("<rect class=\"area\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"/>\n", a.x0,
                     a.y0, a.w, a.h);
  for (int i = 0; i <= 5; ++i) {
    const double v = a.y_max * i / 5;
    svg += fmt::format("<line class=\"grid\" x1=\"{}\" y1=\"{:.2f}\" x2=\"{}\" y2=\"{:.2f}\"/>\n",
                       a.x0, a.y(v), a.x0 + a.w, a.y(v));
    svg += fmt::format("<text class=\"tick\" x=\"{}\" y=\"{:.2f}\" text-anchor=\"end\">{}</text>\n",
                       a.x0 - 6, a.y(v) + 4, number(v));
  }
  svg += fmt::format("<text class=\"axis\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
                     a.x0 + a.w / 2, a.y0 + a.h + 38, escape(x_title));
  svg += fmt::format(
      "<text class=\"axis\" transform=\"translate({},{}) rotate(-90)\" "
      "text-anchor=\"middle\">{}</text>\n",
      a.x0 - 58, a.y0 + a.h / 2, escape(y_title));
}

void legend(std::string& svg, const Area& a, const std::vector<std::string>& names) {
  for (size_t i = 0; i < names.size(); ++i) {
    const double x = a.x0 + 12, y = a.y0 + 18 + 18 * static_cast<double>(i);
    svg += fmt::format(
        "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"3\"/>"
        "<text class=\"tick\" x=\"{}\" y=\"{}\">{}</text>\n",
        x, y - 4, x + 22, y - 4, kColors[i % 2], x + 28, y, escape(names[i]));
  }
}

void latency_chart(std::string& svg, const BenchReport& r, double top) {
  struct Series {
    std::string name;
    const LatencyHistogram* h;
  };
  std::vector<Series> series;
  if (r.latency.count() > 0) series.push_back({"received", &r.latency});
  if (r.confirm_latency.count() > 0) series.push_back({"confirmed", &r.confirm_latency});
  uint64_t count = 0, max_ns = 0;
  for (const auto& s : series) {
    count = std::max(count, s.h->count());
    max_ns = std::max(max_ns, s.h->max());
  }
  // As many nines as the sample resolves (1,000 values: 99.9%), at least two, at most six.
  const int nines = std::clamp(
      static_cast<int>(std::ceil(std::log10(static_cast<double>(std::max<uint64_t>(count, 1))))), 2,
      6);
  const bool in_ms = max_ns >= 2'000'000;
  const double unit = in_ms ? 1e6 : 1e3;
  Area a{kLeft,
         top + kTop,
         kWidth - kLeft - kRight,
         kChartHeight - kTop - kBottom,
         static_cast<double>(nines),
         nice_ceiling(static_cast<double>(max_ns) / unit)};
  frame(svg, a, "latency", "Latency by percentile", "percentile",
        in_ms ? "latency (ms)" : "latency (µs)");
  for (int n = 0; n <= nines; ++n) {
    svg += fmt::format(
        "<line class=\"grid\" x1=\"{:.2f}\" y1=\"{}\" x2=\"{:.2f}\" y2=\"{}\"/>"
        "<text class=\"tick\" x=\"{:.2f}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
        a.x(n), a.y0, a.x(n), a.y0 + a.h, a.x(n), a.y0 + a.h + 18, nines_label(n));
  }
  if (series.empty()) {
    svg += fmt::format("<text class=\"tick\" x=\"{}\" y=\"{}\">no latencies recorded</text>\n",
                       a.x0 + 20, a.y0 + a.h / 2);
  }
  std::vector<std::string> names;
  for (size_t i = 0; i < series.size(); ++i) {
    const Series& s = series[i];
    names.push_back(fmt::format("{} ({} values)", s.name, s.h->count()));
    std::string points;
    for (size_t k = 0; k <= kCurvePoints; ++k) {
      const double x = nines * static_cast<double>(k) / kCurvePoints;
      const double percent = 100.0 * (1.0 - std::pow(10.0, -x));
      points += fmt::format("{:.2f},{:.2f} ", a.x(x),
                            a.y(static_cast<double>(s.h->percentile(percent)) / unit));
    }
    svg += fmt::format(
        "<polyline class=\"curve\" data-series=\"{}\" fill=\"none\" stroke=\"{}\" "
        "stroke-width=\"2\" points=\"{}\"/>\n",
        s.name, kColors[i % 2], points);
    // The percentiles as decimal text ("99.9"), so that the value read back is the one asked.
    std::vector<std::string> marks = {"50", "90", "99"};
    for (int n = 3; n <= nines; ++n) {
      marks.push_back(nines_label(n));
      marks.back().pop_back();  // the '%'
    }
    for (const std::string& label : marks) {
      const double p = std::stod(label);
      const double ns = static_cast<double>(s.h->percentile(p));
      const double x = -std::log10(1.0 - p / 100.0);
      svg += fmt::format(
          "<circle class=\"mark\" data-series=\"{}\" data-percentile=\"{}\" "
          "data-latency-us=\"{}\" cx=\"{:.2f}\" cy=\"{:.2f}\" r=\"3.5\" fill=\"{}\">"
          "<title>{} p{}: {} µs</title></circle>\n",
          s.name, label, ns / 1000.0, a.x(x), a.y(ns / unit), kColors[i % 2], s.name, label,
          ns / 1000.0);
    }
    svg += fmt::format(
        "<circle class=\"mark\" data-series=\"{}\" data-percentile=\"100\" data-latency-us=\"{}\" "
        "cx=\"{:.2f}\" cy=\"{:.2f}\" r=\"3.5\" fill=\"{}\"><title>{} max: {} µs</title></circle>\n",
        s.name, static_cast<double>(s.h->max()) / 1000.0, a.x(nines),
        a.y(static_cast<double>(s.h->max()) / unit), kColors[i % 2], s.name,
        static_cast<double>(s.h->max()) / 1000.0);
  }
  legend(svg, a, names);
  svg += "</g>\n";
}

void throughput_chart(std::string& svg, const BenchReport& r, double top) {
  const auto& t = r.timeline;
  // Every `stride`-th sample, and always the last: at most kMaxIntervals intervals.
  const size_t stride = t.size() <= 1 ? 1 : (t.size() - 2) / kMaxIntervals + 1;
  std::vector<size_t> at;
  for (size_t i = 0; i < t.size(); i += stride) at.push_back(i);
  if (!t.empty() && at.back() != t.size() - 1) at.push_back(t.size() - 1);
  // The last sample is taken when the run ends, often just after the one before: a sliver of an
  // interval whose rate is noise (a few messages over a few milliseconds). It joins the previous.
  if (at.size() >= 3) {
    const double last = t[at[at.size() - 1]].seconds - t[at[at.size() - 2]].seconds;
    const double before = t[at[at.size() - 2]].seconds - t[at[at.size() - 3]].seconds;
    if (last < before / 2) at.erase(at.end() - 2);
  }
  struct Interval {
    double from, to, produced, consumed;  // rates, messages per second
  };
  std::vector<Interval> intervals;
  double y_max = 0;
  for (size_t k = 1; k < at.size(); ++k) {
    const auto& a = t[at[k - 1]];
    const auto& b = t[at[k]];
    const double dt = b.seconds - a.seconds;
    if (!(dt > 0)) continue;
    intervals.push_back(
        {a.seconds, b.seconds, (b.produced - a.produced) / dt, (b.consumed - a.consumed) / dt});
    y_max = std::max({y_max, intervals.back().produced, intervals.back().consumed});
  }
  const double seconds = t.empty() ? 0 : t.back().seconds;
  Area a{kLeft,
         top + kTop,
         kWidth - kLeft - kRight,
         kChartHeight - kTop - kBottom,
         nice_ceiling(seconds),
         nice_ceiling(y_max)};
  frame(svg, a, "throughput", "Throughput over the run", "seconds since the start",
        "messages per second");
  for (int i = 0; i <= 5; ++i) {
    const double v = a.x_max * i / 5;
    svg +=
        fmt::format("<text class=\"tick\" x=\"{:.2f}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
                    a.x(v), a.y0 + a.h + 18, number(v));
  }
  std::vector<std::string> names = {"produced", "consumed"};
  for (size_t i = 0; i < names.size(); ++i) {
    // Steps: each interval's rate held over it.
    std::string points;
    double messages = 0;
    for (const Interval& iv : intervals) {
      const double rate = i == 0 ? iv.produced : iv.consumed;
      messages += rate * (iv.to - iv.from);
      points += fmt::format("{:.2f},{:.2f} {:.2f},{:.2f} ", a.x(iv.from), a.y(rate), a.x(iv.to),
                            a.y(rate));
    }
    svg += fmt::format(
        "<polyline class=\"rate\" data-series=\"{}\" data-messages=\"{:.0f}\" fill=\"none\" "
        "stroke=\"{}\" stroke-width=\"1.5\" points=\"{}\"/>\n",
        names[i], messages, kColors[i % 2], points);
  }
  legend(svg, a,
         {fmt::format("produced ({:.0f} msgs/s overall)", r.produced.msgs_per_s()),
          fmt::format("consumed ({:.0f} msgs/s overall)", r.consumed.msgs_per_s())});
  svg += "</g>\n";
}

}  // namespace

std::string bench_plot_svg(const BenchReport& r) {
  const auto& o = r.options;
  const double height = 2 * kChartHeight + 60;
  std::string svg = fmt::format(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" "
      "viewBox=\"0 0 {0} {1}\" font-family=\"sans-serif\">\n"
      "<style>.title{{font-size:16px;font-weight:bold}} .tick{{font-size:12px;fill:#444}} "
      ".axis{{font-size:13px;fill:#222}} .area{{fill:#fbfcfe;stroke:#999}} "
      ".grid{{stroke:#e3e6ec}} .subtitle{{font-size:12px;fill:#555}}</style>\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n",
      kWidth, height);
  svg += fmt::format(
      "<text class=\"subtitle\" x=\"{}\" y=\"22\">witmq-bench: {}, {} producer(s) x {} "
      "consumer(s), {} B messages, batch {}, {} mode{}</text>\n",
      kLeft, escape(o.kind), o.producers, o.consumers, o.size, o.batch,
      o.mode == ConsumeMode::kStream ? "stream" : "receive",
      o.rate ? fmt::format(", open loop at {} msgs/s", *o.rate) : std::string());
  latency_chart(svg, r, 30);
  throughput_chart(svg, r, 30 + kChartHeight);
  svg += "</svg>\n";
  return svg;
}

Status write_bench_plot(const BenchReport& report, const std::string& path) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (out) out << bench_plot_svg(report);
  if (out) out.close();
  if (!out) {
    return Error(ErrorCode::kIoError,
                 fmt::format("--plot: cannot write '{}': {}", path, std::strerror(errno)));
  }
  return ok_status();
}

}  // namespace witmq::cli
