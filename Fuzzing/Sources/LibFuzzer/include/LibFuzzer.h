// libFuzzer's driver entry (compiler-rt's FuzzerInterface.h), linked in by `-sanitize=fuzzer`: runs the fuzzing
// loop with the command-line flags in argv, calling `test_one_input` for each input.
#ifndef ONNX_DPO_LIBFUZZER_H
#define ONNX_DPO_LIBFUZZER_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*test_one_input)(const uint8_t *data, size_t size));

#endif
