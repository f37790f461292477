#include "CDonutBridge.h"
