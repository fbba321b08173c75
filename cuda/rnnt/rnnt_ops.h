// Entry points of the CPU and CUDA backends. bindings.cpp validates tensors, fills the
// parameter blocks of rnnt_common.h and calls one of these. No PyTorch types appear here.
#pragma once

#include "rnnt_common.h"

namespace sfm {

// CPU (rnnt_cpu.cpp, mutual_information_cpu.cpp); parallel with at::parallel_for.
void row_logprobs_cpu(const RowParams& p);
void logits_grad_cpu(const GradParams& p);
// alpha and loglik, and beta when p.beta is set.
void mi_forward_cpu(const MIParams& p);
// beta first when `compute_beta` (p.beta must then point at scratch memory), then
// px_grad and py_grad.
void mi_backward_cpu(const MIParams& p, bool compute_beta);

// CUDA (rnnt_cuda.cu, mutual_information_cuda.cu). Asynchronous on `stream` (a
// cudaStream_t); each returns nullptr on success or a static error description.
const char* row_logprobs_cuda(const RowParams& p, void* stream);
const char* logits_grad_cuda(const GradParams& p, void* stream);
// Runs the alpha pass and, when p.beta is set, the beta pass concurrently (one block per
// utterance and direction).
const char* mi_forward_cuda(const MIParams& p, void* stream);
// Computes beta first when `compute_beta` (p.beta must then point at scratch memory),
// then px_grad and py_grad.
const char* mi_backward_cuda(const MIParams& p, bool compute_beta, void* stream);

}  // namespace sfm
