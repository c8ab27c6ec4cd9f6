// The demo control task of `mxrc run`: a simulated axis (mass, viscous and
// smoothed Coulomb friction) with a PID position controller tracking a smooth
// setpoint. Its whole state is one array of STATE_SIZE doubles whose layout is
// mirrored by mxrc/demo/_axis.py (the Python tier does the same math on the
// same array). No allocation, no locks, no I/O: safe on a cycle thread.
#pragma once

#include <cstddef>

namespace mxrc::demo {

// Indices into the state array (keep in step with mxrc/demo/_axis.py).
enum AxisIndex : std::size_t {
  kMassKg = 0,
  kViscousNspm = 1,
  kCoulombN = 2,
  kVepsMps = 3,
  kKp = 4,
  kKi = 5,
  kKd = 6,
  kUMaxN = 7,
  kIntegralLimit = 8,
  kDtS = 9,
  kAmplitudeM = 10,
  kFreqHz = 11,
  kStep = 12,
  kPositionM = 13,
  kVelocityMps = 14,
  kIntegral = 15,
  kPrevErrorM = 16,
  kLastSetpointM = 17,
  kLastErrorM = 18,
  kLastForceN = 19,
  kSumSqError = 20,
  kMaxAbsErrorM = 21,
  kStateSize = 24,
};

}  // namespace mxrc::demo

struct mxrc_cycle_ctx;

extern "C" {
// One control cycle on the state array `s` (kStateSize doubles).
void mxrc_demo_axis_step(double* s) noexcept;
// The same as a native cycle body (mxrc.h signature): ctx->user is the state
// array. Returns 0, or 1 when ctx or ctx->user is null.
int mxrc_demo_axis_body(const mxrc_cycle_ctx* ctx);
}
