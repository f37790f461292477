// Intentionally empty: SwiftPM needs one source file in a C target. Everything lives
// in include/CDonutBridge.h as `static inline` accessors; this target has no API of its own.
#include "CDonutBridge.h"
