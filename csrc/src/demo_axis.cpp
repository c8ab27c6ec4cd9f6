// The demo axis + PID (see mxrc/demo_axis.hpp); mirrors mxrc/demo/_axis.py
// operation by operation so both tiers agree to rounding.
#include "mxrc/demo_axis.hpp"

#include <algorithm>
#include <cmath>

#include "mxrc.h"  // the C ABI of native bodies (mxrc/include, shipped in the wheel)

namespace {
constexpr double kPi = 3.14159265358979323846;
}  // namespace

extern "C" void mxrc_demo_axis_step(double* s) noexcept {
  using namespace mxrc::demo;
  const double dt = s[kDtS];
  const double step = s[kStep];
  const double t = step * dt;
  const double ref = s[kAmplitudeM] * 0.5 * (1.0 - std::cos(2.0 * kPi * s[kFreqHz] * t));
  const double x = s[kPositionM];
  const double v = s[kVelocityMps];
  const double err = ref - x;
  // PID: integral clamped (anti-windup), derivative on the error.
  const double lim = s[kIntegralLimit];
  const double integral = std::min(std::max(s[kIntegral] + err * dt, -lim), lim);
  const double d_err = step > 0.0 ? (err - s[kPrevErrorM]) / dt : 0.0;
  double u = s[kKp] * err + s[kKi] * integral + s[kKd] * d_err;
  const double u_max = s[kUMaxN];
  u = std::min(std::max(u, -u_max), u_max);
  // Plant: semi-implicit Euler.
  const double friction = s[kViscousNspm] * v + s[kCoulombN] * std::tanh(v / s[kVepsMps]);
  const double a = (u - friction) / s[kMassKg];
  const double v_new = v + a * dt;
  s[kPrevErrorM] = err;
  s[kVelocityMps] = v_new;
  s[kPositionM] = x + v_new * dt;
  s[kIntegral] = integral;
  s[kStep] = step + 1.0;
  s[kLastSetpointM] = ref;
  s[kLastErrorM] = err;
  s[kLastForceN] = u;
  s[kSumSqError] += err * err;
  const double abs_err = std::fabs(err);
  if (abs_err > s[kMaxAbsErrorM]) s[kMaxAbsErrorM] = abs_err;
}

extern "C" int mxrc_demo_axis_body(const mxrc_cycle_ctx* ctx) {
  if (ctx == nullptr || ctx->user == nullptr) return 1;
  mxrc_demo_axis_step(static_cast<double*>(ctx->user));
  return 0;
}
