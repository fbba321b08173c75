// Entry points of the CPU and CUDA backends. bindings.cpp validates tensors, fills the
// parameter blocks of rnnt_common.h and calls one of these. No PyTorch types appear here.
#pragma once

#include "rnnt_common.h"

namespace sfm {

// The lattice step of the fused CPU loss (rnnt_cpu.cpp): per utterance, the rows'
// blank / label log-probs (compact (N, T, J) arrays in acc_t, as written by
// row_logprobs_cpu with RowParams::dense) go into the lattice; costs[n] = -alpha(U_n, T_n)
// and, with need_grad, the arrays are overwritten by the edge occupancies of the rows
// (0 for invalid rows, NaN for every row of an utterance with impossible lengths).
struct LossParams {
  Dtype dtype;  // kFloat64: double, otherwise float
  int64_t N, T, J, S;
  const int64_t* target_lengths;  // (N,)
  const int64_t* logit_lengths;   // (N,)
  const int64_t* ranges;          // (N, T, J) or nullptr (u = j)
  void* lp_blank;                 // (N, T, J) in, occ_blank out
  void* lp_label;                 // (N, T, J) in, occ_label out
  void* costs;                    // (N,) out
  bool need_grad;
};

// The simple / smoothed loss on the CPU (simple_cpu.cpp): am (N, T, V), lm (N, U + 1, V)
// contiguous in `dtype` (float32 or float64); see simple_cpu.cpp for the arrays.
struct SimpleParams {
  Dtype dtype;
  int64_t N, T, U, V;
  const void* am;
  const void* lm;
  const int64_t* targets;         // (N, U)
  const int64_t* target_lengths;  // (N,)
  const int64_t* logit_lengths;   // (N,)
  int64_t blank;
  double lm_scale, am_scale;
  bool need_occ;  // forward: compute the occupancies (for return_grad or the backward)
  // Forward outputs, backward inputs.
  void* costs;  // (N,)
  void* e_am;   // (N, T, V)
  void* e_lm;   // (N, U + 1, V)
  void* s_am;   // (N, T)
  void* s_lm;   // (N, U + 1)
  void* prod;   // (N, U + 1, T)
  void* occ_x;  // (N, U, T + 1)
  void* occ_y;  // (N, U + 1, T)
  // Backward.
  const void* grad_costs;  // (N,)
  void* grad_am;           // (N, T, V)
  void* grad_lm;           // (N, U + 1, V)
};

// CPU (rnnt_cpu.cpp, mutual_information_cpu.cpp, simple_cpu.cpp); parallel with
// cpu::parallel_chunks.
void row_logprobs_cpu(const RowParams& p);
void logits_grad_cpu(const GradParams& p);
void loss_lattice_cpu(const LossParams& p);
void simple_forward_cpu(const SimpleParams& p);
void simple_backward_cpu(const SimpleParams& p);
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
