/* The clock behind perfsdk's native timing.
 *
 * On x86-64 the time-stamp counter is read directly (about 15 ns here, against about 37 ns for
 * clock_gettime through the vDSO), but only when the kernel itself trusts it as its clocksource:
 * that is the kernel's verdict that the counter is invariant and synchronised across cores.
 * Everywhere else CLOCK_MONOTONIC in nanoseconds is used. perfsdk_use_tsc is decided once at import.
 */
#ifndef PERFSDK_CLOCK_H
#define PERFSDK_CLOCK_H

#include <stdint.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#define PERFSDK_HAVE_TSC 1
#else
#define PERFSDK_HAVE_TSC 0
#endif

static int perfsdk_use_tsc = 0;

static inline int64_t perfsdk_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + (int64_t)ts.tv_nsec;
}

static inline int64_t perfsdk_now_ticks(void) {
#if PERFSDK_HAVE_TSC
    if (perfsdk_use_tsc) {
        return (int64_t)__rdtsc();
    }
#endif
    return perfsdk_monotonic_ns();
}

static inline int perfsdk_have_tsc(void) { return PERFSDK_HAVE_TSC; }

#endif
