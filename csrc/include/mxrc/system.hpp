// The whole system layer: include this from a C++ program.
#pragma once

#include "mxrc/affinity.hpp"
#include "mxrc/clock.hpp"
#include "mxrc/cpuset.hpp"
#include "mxrc/error.hpp"
#include "mxrc/memory.hpp"
#include "mxrc/numa.hpp"
#include "mxrc/sched.hpp"
#include "mxrc/setup.hpp"
