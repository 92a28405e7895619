// The extension as one translation unit (a "unity build"): the ATen headers are parsed once,
// which keeps the one-time build short on a small machine. Add a family's file here.
#include "ops.cpp"
#include "cpu/normalization.cpp"
#include "cpu/activation.cpp"
#include "cpu/linear.cpp"
#include "cpu/dropout.cpp"
#include "cpu/loss.cpp"
#include "cpu/pooling.cpp"
#include "cpu/recurrent.cpp"
#include "cpu/attention.cpp"
#include "cpu/conv.cpp"
#include "cpu/embedding.cpp"
