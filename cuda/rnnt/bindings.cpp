// PyTorch operator registrations for the RNN-T kernels (namespace `speechfm_rnnt`).
//
// The operators are building blocks; speechfm/ops/rnnt.py composes them into autograd
// Functions and documents the user-facing API. Each glue function here checks its
// tensors (shapes, dtypes, devices, layout), fills a parameter block of rnnt_common.h
// and calls the CPU or CUDA backend. Values (lengths, labels) are not checked here: the
// kernels never read or write out of bounds whatever the values, and an utterance with
// impossible values gets a NaN cost; the Python layer reports such inputs by name.
//
// Built with -DSPEECHFM_WITH_CUDA the same glue is also registered for the CUDA dispatch
// key. It takes the current CUDA stream through c10's device-generic interface, so this
// file needs no CUDA header.
//
// Built with -DSPEECHFM_CUDA_EMULATION (tests only) the operators live in the namespace
// `speechfm_rnnt_emu` and send CPU tensors to the CUDA launchers, which were compiled as
// C++ against cuda_emulation.h: the CUDA kernels' code then runs, slowly, on the CPU.
#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "rnnt_common.h"
#include "rnnt_ops.h"

namespace sfm {
namespace {

Dtype to_dtype(const at::Tensor& t, const char* name) {
  switch (t.scalar_type()) {
    case at::kFloat: return Dtype::kFloat32;
    case at::kDouble: return Dtype::kFloat64;
    case at::kHalf: return Dtype::kFloat16;
    case at::kBFloat16: return Dtype::kBFloat16;
    default: TORCH_CHECK(false, name, " must be float32, float64, float16 or bfloat16, got ", t.scalar_type());
  }
  return Dtype::kFloat32;
}

at::ScalarType acc_scalar_type(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

void check_device(const at::Tensor& t, const at::Tensor& ref, const char* name) {
  TORCH_CHECK(t.device() == ref.device(), name, " is on ", t.device(), " but the inputs are on ",
              ref.device());
}

// int64, contiguous, on the reference device (a copy only when needed).
at::Tensor as_index(const at::Tensor& t, const at::Tensor& ref, const char* name, int64_t dim) {
  TORCH_CHECK(t.dim() == dim, name, " must have ", dim, " dimensions, got shape ", t.sizes());
  TORCH_CHECK(!at::isFloatingType(t.scalar_type()) && t.scalar_type() != at::kBool, name,
              " must be an integer tensor, got ", t.scalar_type());
  check_device(t, ref, name);
  return t.to(at::kLong).contiguous();
}

void check_acc(const at::Tensor& t, at::ScalarType acc, const at::Tensor& ref, const char* name) {
  TORCH_CHECK(t.scalar_type() == acc, name, " must be ", acc, ", got ", t.scalar_type());
  TORCH_CHECK(t.dim() == 3, name, " must have 3 dimensions, got shape ", t.sizes());
  check_device(t, ref, name);
}

#if defined(SPEECHFM_CUDA_EMULATION)
#define SFM_OPS_NAMESPACE speechfm_rnnt_emu
bool runs_on_cuda(const at::Tensor&) { return true; }
void* current_cuda_stream(const at::Tensor&) { return nullptr; }
#define SFM_RUN_CUDA(call, op) check_cuda((call), op)
#elif defined(SPEECHFM_WITH_CUDA)
#define SFM_OPS_NAMESPACE speechfm_rnnt
bool runs_on_cuda(const at::Tensor& t) { return t.is_cuda(); }
void* current_cuda_stream(const at::Tensor& t) {
  const auto* impl = c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA);
  return impl->getStream(t.device()).native_handle();
}
#define SFM_RUN_CUDA(call, op) check_cuda((call), op)
#else
#define SFM_OPS_NAMESPACE speechfm_rnnt
bool runs_on_cuda(const at::Tensor& t) { return t.is_cuda(); }
#define SFM_RUN_CUDA(call, op) \
  TORCH_CHECK(false, "speechfm_rnnt::", op, ": this build has no CUDA kernels")
#endif

[[maybe_unused]] void check_cuda(const char* error, const char* op) {
  TORCH_CHECK(error == nullptr, "speechfm_rnnt::", op, ": CUDA error: ", error);
}

// Shared checks of the row operators; returns (targets, target_lengths, logit_lengths,
// ranges) as contiguous int64.
struct RowInputs {
  at::Tensor targets, target_lengths, logit_lengths, ranges;
};

RowInputs row_inputs(const at::Tensor& logits, const at::Tensor& targets,
                     const at::Tensor& target_lengths, const at::Tensor& logit_lengths,
                     const std::optional<at::Tensor>& ranges, int64_t blank) {
  TORCH_CHECK(logits.dim() == 4, "logits must be (N, T, J, V), got shape ", logits.sizes());
  TORCH_CHECK(logits.is_contiguous(), "logits must be contiguous");
  const int64_t N = logits.size(0), T = logits.size(1), J = logits.size(2), V = logits.size(3);
  TORCH_CHECK(V >= 1 && J >= 1, "logits must have J >= 1 and V >= 1, got shape ", logits.sizes());
  TORCH_CHECK(blank >= 0 && blank < V, "blank must be in [0, ", V, "), got ", blank);
  RowInputs in;
  in.targets = as_index(targets, logits, "targets", 2);
  TORCH_CHECK(in.targets.size(0) == N, "targets must have N = ", N, " rows, got ", targets.sizes());
  in.target_lengths = as_index(target_lengths, logits, "target_lengths", 1);
  in.logit_lengths = as_index(logit_lengths, logits, "logit_lengths", 1);
  TORCH_CHECK(in.target_lengths.size(0) == N && in.logit_lengths.size(0) == N,
              "target_lengths and logit_lengths must have N = ", N, " entries");
  if (ranges.has_value() && ranges->defined()) {
    in.ranges = as_index(*ranges, logits, "ranges", 3);
    TORCH_CHECK(in.ranges.sizes() == at::IntArrayRef({N, T, J}), "ranges must be (N, T, J) = (",
                N, ", ", T, ", ", J, "), got ", ranges->sizes());
  }
  return in;
}

void check_rows_view(const at::Tensor& t, int64_t N, int64_t T, int64_t J, bool allow_short,
                     const char* name) {
  const bool full = t.size(0) == N && t.size(1) == T && t.size(2) == J;
  const bool shorter = allow_short && t.size(0) == N && t.size(1) == T && t.size(2) == J - 1;
  TORCH_CHECK(full || shorter, name, " must be (N, T, J) = (", N, ", ", T, ", ", J, ")",
              allow_short ? " or (N, T, J - 1)" : "", ", got ", t.sizes());
}

at::Tensor rnnt_row_logprobs(const at::Tensor& logits, const at::Tensor& targets,
                             const at::Tensor& target_lengths, const at::Tensor& logit_lengths,
                             const std::optional<at::Tensor>& ranges, int64_t blank, bool fused,
                             at::Tensor& out_blank, at::Tensor& out_label) {
  const Dtype dtype = to_dtype(logits, "logits");
  const RowInputs in = row_inputs(logits, targets, target_lengths, logit_lengths, ranges, blank);
  const int64_t N = logits.size(0), T = logits.size(1), J = logits.size(2);
  const at::ScalarType acc = acc_scalar_type(logits);
  check_acc(out_blank, acc, logits, "out_blank");
  check_acc(out_label, acc, logits, "out_label");
  check_rows_view(out_blank, N, T, J, false, "out_blank");
  // The label of row j = U is never written, so the full loss can pass a view of px
  // with one column fewer (the last symbol position has no label).
  check_rows_view(out_label, N, T, J, !in.ranges.defined(), "out_label");
  c10::DeviceGuard guard(logits.device());
  at::Tensor denom = at::empty({N, T, J}, logits.options().dtype(acc));
  RowParams p{};
  p.logits = logits.data_ptr();
  p.dtype = dtype;
  p.N = N;
  p.T = T;
  p.J = J;
  p.V = logits.size(3);
  p.targets = in.targets.data_ptr<int64_t>();
  p.S = in.targets.size(1);
  p.target_lengths = in.target_lengths.data_ptr<int64_t>();
  p.logit_lengths = in.logit_lengths.data_ptr<int64_t>();
  p.ranges = in.ranges.defined() ? in.ranges.data_ptr<int64_t>() : nullptr;
  p.blank = blank;
  p.fused = fused;
  p.out_blank = out_blank.data_ptr();
  p.ob_sn = out_blank.stride(0);
  p.ob_st = out_blank.stride(1);
  p.ob_sj = out_blank.stride(2);
  p.out_label = out_label.data_ptr();
  p.ol_sn = out_label.stride(0);
  p.ol_st = out_label.stride(1);
  p.ol_sj = out_label.stride(2);
  p.denom = denom.data_ptr();
  if (N * T * J == 0) return denom;
  if (runs_on_cuda(logits)) {
    SFM_RUN_CUDA(row_logprobs_cuda(p, current_cuda_stream(logits)), "rnnt_row_logprobs");
  } else {
    row_logprobs_cpu(p);
  }
  return denom;
}

void logits_grad_glue(const at::Tensor& logits, const at::Tensor& denom,
                      const at::Tensor& targets, const at::Tensor& target_lengths,
                      const at::Tensor& logit_lengths, const std::optional<at::Tensor>& ranges,
                      const at::Tensor& occ_blank, const at::Tensor& occ_label,
                      const at::Tensor& scale, int64_t blank, double clamp, bool fused,
                      bool grad_holds_probs, at::Tensor& grad) {
  const Dtype dtype = to_dtype(logits, "logits");
  const RowInputs in = row_inputs(logits, targets, target_lengths, logit_lengths, ranges, blank);
  const int64_t N = logits.size(0), T = logits.size(1), J = logits.size(2);
  const at::ScalarType acc = acc_scalar_type(logits);
  TORCH_CHECK(grad.sizes() == logits.sizes() && grad.scalar_type() == logits.scalar_type() &&
                  grad.is_contiguous(),
              "grad must be a contiguous tensor of the shape and dtype of logits");
  check_device(grad, logits, "grad");
  check_acc(denom, acc, logits, "denom");
  TORCH_CHECK(denom.is_contiguous(), "denom must be contiguous");
  check_rows_view(denom, N, T, J, false, "denom");
  check_acc(occ_blank, acc, logits, "occ_blank");
  check_acc(occ_label, acc, logits, "occ_label");
  check_rows_view(occ_blank, N, T, J, false, "occ_blank");
  check_rows_view(occ_label, N, T, J, !in.ranges.defined(), "occ_label");
  TORCH_CHECK(scale.dim() == 1 && scale.size(0) == N && scale.scalar_type() == acc &&
                  scale.is_contiguous(),
              "scale must be a contiguous (N,) tensor of dtype ", acc);
  check_device(scale, logits, "scale");
  c10::DeviceGuard guard(logits.device());
  GradParams p{};
  p.logits = logits.data_ptr();
  p.grad = grad.data_ptr();
  p.dtype = dtype;
  p.N = N;
  p.T = T;
  p.J = J;
  p.V = logits.size(3);
  p.targets = in.targets.data_ptr<int64_t>();
  p.S = in.targets.size(1);
  p.target_lengths = in.target_lengths.data_ptr<int64_t>();
  p.logit_lengths = in.logit_lengths.data_ptr<int64_t>();
  p.ranges = in.ranges.defined() ? in.ranges.data_ptr<int64_t>() : nullptr;
  p.blank = blank;
  p.fused = fused;
  p.denom = denom.data_ptr();
  p.occ_blank = occ_blank.data_ptr();
  p.gb_sn = occ_blank.stride(0);
  p.gb_st = occ_blank.stride(1);
  p.gb_sj = occ_blank.stride(2);
  p.occ_label = occ_label.data_ptr();
  p.gl_sn = occ_label.stride(0);
  p.gl_st = occ_label.stride(1);
  p.gl_sj = occ_label.stride(2);
  p.scale = scale.data_ptr();
  p.clamp = clamp;
  p.grad_holds_probs = grad_holds_probs;
  if (logits.numel() == 0) return;
  if (runs_on_cuda(logits)) {
    TORCH_CHECK(!grad_holds_probs, "grad_holds_probs is a CPU-only mode");
    SFM_RUN_CUDA(logits_grad_cuda(p, current_cuda_stream(logits)), "rnnt_logits_grad");
  } else {
    logits_grad_cpu(p);
  }
}

void rnnt_logits_grad(const at::Tensor& logits, const at::Tensor& denom,
                      const at::Tensor& targets, const at::Tensor& target_lengths,
                      const at::Tensor& logit_lengths, const std::optional<at::Tensor>& ranges,
                      const at::Tensor& occ_blank, const at::Tensor& occ_label,
                      const at::Tensor& scale, int64_t blank, double clamp, bool fused,
                      at::Tensor& grad) {
  logits_grad_glue(logits, denom, targets, target_lengths, logit_lengths, ranges, occ_blank,
                   occ_label, scale, blank, clamp, fused, false, grad);
}

#if !defined(SPEECHFM_CUDA_EMULATION)
// The fused CPU loss: the row pass and the lattice in one call, returning
// (costs (N,), denom, occ_blank, occ_label (N, T, J), probs). Without need_grad the
// three row arrays hold the log-normalisers and log-probs; with cache_probs (fused
// float32 / float64 logits only) `probs` is the softmax of every valid row, which
// rnnt_loss_cpu_backward then turns into the gradient in place (else it is empty).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnnt_loss_cpu(
    const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& target_lengths,
    const at::Tensor& logit_lengths, const std::optional<at::Tensor>& ranges, int64_t blank,
    bool fused, bool need_grad, bool cache_probs) {
  const Dtype dtype = to_dtype(logits, "logits");
  TORCH_CHECK(logits.device().is_cpu(), "rnnt_loss_cpu takes CPU tensors");
  const RowInputs in = row_inputs(logits, targets, target_lengths, logit_lengths, ranges, blank);
  const int64_t N = logits.size(0), T = logits.size(1), J = logits.size(2);
  if (!in.ranges.defined()) {
    TORCH_CHECK(J == in.targets.size(1) + 1, "logits must have J = U + 1 = ",
                in.targets.size(1) + 1, " rows per frame without ranges, got ", J);
  }
  const auto opts = logits.options().dtype(acc_scalar_type(logits));
  at::Tensor costs = at::empty({N}, opts);
  at::Tensor denom = at::empty({N, T, J}, opts);
  at::Tensor lp_blank = at::empty({N, T, J}, opts);
  at::Tensor lp_label = at::empty({N, T, J}, opts);
  const bool cache = cache_probs && need_grad && fused &&
                     (dtype == Dtype::kFloat32 || dtype == Dtype::kFloat64);
  at::Tensor probs = cache ? at::empty_like(logits) : at::empty({0}, logits.options());
  RowParams rp{};
  rp.logits = logits.data_ptr();
  rp.dtype = dtype;
  rp.N = N;
  rp.T = T;
  rp.J = J;
  rp.V = logits.size(3);
  rp.targets = in.targets.data_ptr<int64_t>();
  rp.S = in.targets.size(1);
  rp.target_lengths = in.target_lengths.data_ptr<int64_t>();
  rp.logit_lengths = in.logit_lengths.data_ptr<int64_t>();
  rp.ranges = in.ranges.defined() ? in.ranges.data_ptr<int64_t>() : nullptr;
  rp.blank = blank;
  rp.fused = fused;
  rp.out_blank = lp_blank.data_ptr();
  rp.ob_sn = T * J;
  rp.ob_st = J;
  rp.ob_sj = 1;
  rp.out_label = lp_label.data_ptr();
  rp.ol_sn = T * J;
  rp.ol_st = J;
  rp.ol_sj = 1;
  rp.denom = denom.data_ptr();
  rp.dense = true;
  rp.probs = cache ? probs.data_ptr() : nullptr;
  if (N * T * J > 0) row_logprobs_cpu(rp);
  LossParams lp{};
  lp.dtype = dtype == Dtype::kFloat64 ? Dtype::kFloat64 : Dtype::kFloat32;
  lp.N = N;
  lp.T = T;
  lp.J = J;
  lp.S = rp.S;
  lp.target_lengths = rp.target_lengths;
  lp.logit_lengths = rp.logit_lengths;
  lp.ranges = rp.ranges;
  lp.lp_blank = lp_blank.data_ptr();
  lp.lp_label = lp_label.data_ptr();
  lp.costs = costs.data_ptr();
  lp.need_grad = need_grad;
  if (N > 0) loss_lattice_cpu(lp);
  return {costs, denom, lp_blank, lp_label, probs};
}

void rnnt_loss_cpu_backward(const at::Tensor& logits, const at::Tensor& denom,
                            const at::Tensor& targets, const at::Tensor& target_lengths,
                            const at::Tensor& logit_lengths,
                            const std::optional<at::Tensor>& ranges, const at::Tensor& occ_blank,
                            const at::Tensor& occ_label, const at::Tensor& scale, int64_t blank,
                            double clamp, bool fused, bool grad_holds_probs, at::Tensor& grad) {
  TORCH_CHECK(logits.device().is_cpu(), "rnnt_loss_cpu_backward takes CPU tensors");
  logits_grad_glue(logits, denom, targets, target_lengths, logit_lengths, ranges, occ_blank,
                   occ_label, scale, blank, clamp, fused, grad_holds_probs, grad);
}

// The simple / smoothed loss (simple_cpu.cpp). Returns (costs, occ_x, occ_y, e_am, e_lm,
// s_am, s_lm, prod): the costs, the edge occupancies (N, U, T + 1) / (N, U + 1, T)
// (zeros when !need_occ) and what rnnt_simple_cpu_backward needs.
std::vector<at::Tensor> rnnt_simple_cpu(const at::Tensor& am, const at::Tensor& lm,
                                        const at::Tensor& targets,
                                        const at::Tensor& target_lengths,
                                        const at::Tensor& logit_lengths, int64_t blank,
                                        double lm_scale, double am_scale, bool need_occ) {
  TORCH_CHECK(am.device().is_cpu() && lm.device().is_cpu(), "rnnt_simple_cpu takes CPU tensors");
  TORCH_CHECK(am.dim() == 3 && lm.dim() == 3 && am.size(0) == lm.size(0) &&
                  am.size(2) == lm.size(2) && lm.size(1) >= 1,
              "am must be (N, T, V) and lm (N, U + 1, V), got ", am.sizes(), " and ", lm.sizes());
  TORCH_CHECK(am.scalar_type() == lm.scalar_type() &&
                  (am.scalar_type() == at::kFloat || am.scalar_type() == at::kDouble) &&
                  am.is_contiguous() && lm.is_contiguous(),
              "am and lm must be contiguous, both float32 or both float64");
  const int64_t N = am.size(0), T = am.size(1), V = am.size(2), U = lm.size(1) - 1;
  TORCH_CHECK(V >= 1 && blank >= 0 && blank < V, "blank must be in [0, ", V, "), got ", blank);
  const at::Tensor y = as_index(targets, am, "targets", 2);
  const at::Tensor ul = as_index(target_lengths, am, "target_lengths", 1);
  const at::Tensor tl = as_index(logit_lengths, am, "logit_lengths", 1);
  TORCH_CHECK(y.size(0) == N && y.size(1) == U && ul.size(0) == N && tl.size(0) == N,
              "targets must be (N, U) = (", N, ", ", U, ") and the lengths (N,)");
  const auto opts = am.options();
  std::vector<at::Tensor> out = {
      at::empty({N}, opts),         at::empty({N, U, T + 1}, opts), at::empty({N, U + 1, T}, opts),
      at::empty({N, T, V}, opts),   at::empty({N, U + 1, V}, opts), at::empty({N, T}, opts),
      at::empty({N, U + 1}, opts),  at::empty({N, U + 1, T}, opts)};
  SimpleParams p{};
  p.dtype = am.scalar_type() == at::kDouble ? Dtype::kFloat64 : Dtype::kFloat32;
  p.N = N;
  p.T = T;
  p.U = U;
  p.V = V;
  p.am = am.data_ptr();
  p.lm = lm.data_ptr();
  p.targets = y.data_ptr<int64_t>();
  p.target_lengths = ul.data_ptr<int64_t>();
  p.logit_lengths = tl.data_ptr<int64_t>();
  p.blank = blank;
  p.lm_scale = lm_scale;
  p.am_scale = am_scale;
  p.need_occ = need_occ;
  p.costs = out[0].data_ptr();
  p.occ_x = out[1].data_ptr();
  p.occ_y = out[2].data_ptr();
  p.e_am = out[3].data_ptr();
  p.e_lm = out[4].data_ptr();
  p.s_am = out[5].data_ptr();
  p.s_lm = out[6].data_ptr();
  p.prod = out[7].data_ptr();
  if (N > 0) simple_forward_cpu(p);
  return out;
}

std::tuple<at::Tensor, at::Tensor> rnnt_simple_cpu_backward(
    const at::Tensor& e_am, const at::Tensor& e_lm, const at::Tensor& s_am,
    const at::Tensor& s_lm, const at::Tensor& prod, const at::Tensor& occ_x,
    const at::Tensor& occ_y, const at::Tensor& targets, const at::Tensor& grad_costs,
    int64_t blank, double lm_scale, double am_scale) {
  TORCH_CHECK(e_am.device().is_cpu(), "rnnt_simple_cpu_backward takes CPU tensors");
  const int64_t N = e_am.size(0), T = e_am.size(1), V = e_am.size(2), U = e_lm.size(1) - 1;
  const auto type = e_am.scalar_type();
  for (const at::Tensor* t : {&e_lm, &s_am, &s_lm, &prod, &occ_x, &occ_y}) {
    TORCH_CHECK(t->scalar_type() == type && t->is_contiguous() && t->size(0) == N,
                "the saved tensors of rnnt_simple_cpu must be passed unchanged");
  }
  TORCH_CHECK(prod.numel() == N * (U + 1) * T && occ_x.numel() == N * U * (T + 1) &&
                  occ_y.numel() == N * (U + 1) * T && s_am.numel() == N * T &&
                  s_lm.numel() == N * (U + 1) && blank >= 0 && blank < V,
              "the saved tensors of rnnt_simple_cpu must be passed unchanged");
  const at::Tensor y = as_index(targets, e_am, "targets", 2);
  TORCH_CHECK(y.size(0) == N && y.size(1) == U, "targets must be (N, U)");
  const at::Tensor g = grad_costs.to(type).contiguous();
  TORCH_CHECK(g.dim() == 1 && g.size(0) == N, "grad_costs must be (N,)");
  at::Tensor grad_am = at::empty_like(e_am);
  at::Tensor grad_lm = at::empty_like(e_lm);
  SimpleParams p{};
  p.dtype = type == at::kDouble ? Dtype::kFloat64 : Dtype::kFloat32;
  p.N = N;
  p.T = T;
  p.U = U;
  p.V = V;
  p.targets = y.data_ptr<int64_t>();
  p.blank = blank;
  p.lm_scale = lm_scale;
  p.am_scale = am_scale;
  p.e_am = e_am.data_ptr();
  p.e_lm = e_lm.data_ptr();
  p.s_am = s_am.data_ptr();
  p.s_lm = s_lm.data_ptr();
  p.prod = prod.data_ptr();
  p.occ_x = occ_x.data_ptr();
  p.occ_y = occ_y.data_ptr();
  p.grad_costs = g.data_ptr();
  p.grad_am = grad_am.data_ptr();
  p.grad_lm = grad_lm.data_ptr();
  if (N > 0) simple_backward_cpu(p);
  return {grad_am, grad_lm};
}
#endif

// Checks px (N, S, T + 1) and py (N, S + 1, T) (rows contiguous; the batch stride is
// free so that px may be a slice of a larger buffer) and fills the shared fields.
MIParams mi_params(const at::Tensor& px, const at::Tensor& py, const at::Tensor& boundary) {
  TORCH_CHECK(px.dim() == 3 && py.dim() == 3, "px and py must be 3-D, got ", px.sizes(), " and ",
              py.sizes());
  TORCH_CHECK(px.scalar_type() == py.scalar_type() &&
                  (px.scalar_type() == at::kFloat || px.scalar_type() == at::kDouble),
              "px and py must both be float32 or both float64");
  check_device(py, px, "py");
  check_device(boundary, px, "boundary");
  const int64_t N = px.size(0), S = px.size(1), T = py.size(2);
  TORCH_CHECK(px.size(2) == T + 1 && py.size(0) == N && py.size(1) == S + 1,
              "px must be (N, S, T + 1) and py (N, S + 1, T), got ", px.sizes(), " and ",
              py.sizes());
  // Rows must be contiguous; strides of size-1 dimensions do not matter.
  TORCH_CHECK(px.numel() == 0 || ((px.stride(2) == 1 || T == 0) &&
                                  (px.stride(1) == T + 1 || S == 1)),
              "px must have contiguous rows");
  TORCH_CHECK(py.numel() == 0 || ((py.stride(2) == 1 || T == 1) && (py.stride(1) == T || S == 0)),
              "py must have contiguous rows");
  TORCH_CHECK(boundary.scalar_type() == at::kLong && boundary.is_contiguous() &&
                  boundary.dim() == 2 && boundary.size(0) == N && boundary.size(1) == 4,
              "boundary must be a contiguous (N, 4) int64 tensor");
  MIParams p{};
  p.dtype = px.scalar_type() == at::kDouble ? Dtype::kFloat64 : Dtype::kFloat32;
  p.N = N;
  p.S = S;
  p.T = T;
  p.px = px.data_ptr();
  p.px_sn = px.stride(0);
  p.py = py.data_ptr();
  p.py_sn = py.stride(0);
  p.boundary = boundary.data_ptr<int64_t>();
  return p;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> mutual_information_forward(
    const at::Tensor& px, const at::Tensor& py, const at::Tensor& boundary, bool with_beta) {
  MIParams p = mi_params(px, py, boundary);
  c10::DeviceGuard guard(px.device());
  const auto opts = px.options();
  at::Tensor alpha = at::empty({p.N, p.S + 1, p.T + 1}, opts);
  at::Tensor loglik = at::empty({p.N}, opts);
  at::Tensor beta = with_beta ? at::empty({p.N, p.S + 1, p.T + 1}, opts) : at::empty({0}, opts);
  p.alpha = alpha.data_ptr();
  p.beta = with_beta ? beta.data_ptr() : nullptr;
  p.loglik = loglik.data_ptr();
  if (p.N == 0) return {alpha, loglik, beta};
  if (runs_on_cuda(px)) {
    SFM_RUN_CUDA(mi_forward_cuda(p, current_cuda_stream(px)), "mutual_information_forward");
  } else {
    mi_forward_cpu(p);
  }
  return {alpha, loglik, beta};
}

std::tuple<at::Tensor, at::Tensor> mutual_information_backward(
    const at::Tensor& px, const at::Tensor& py, const at::Tensor& boundary,
    const at::Tensor& alpha, const std::optional<at::Tensor>& beta, const at::Tensor& loglik,
    const std::optional<at::Tensor>& scale) {
  MIParams p = mi_params(px, py, boundary);
  const std::vector<int64_t> cells{p.N, p.S + 1, p.T + 1};
  TORCH_CHECK(alpha.sizes() == at::IntArrayRef(cells) && alpha.is_contiguous() &&
                  alpha.scalar_type() == px.scalar_type(),
              "alpha must be a contiguous (N, S + 1, T + 1) tensor of the dtype of px");
  TORCH_CHECK(loglik.dim() == 1 && loglik.size(0) == p.N && loglik.is_contiguous() &&
                  loglik.scalar_type() == px.scalar_type(),
              "loglik must be a contiguous (N,) tensor of the dtype of px");
  check_device(alpha, px, "alpha");
  check_device(loglik, px, "loglik");
  const bool have_beta = beta.has_value() && beta->defined() && beta->numel() > 0;
  if (have_beta) {
    TORCH_CHECK(beta->sizes() == at::IntArrayRef(cells) && beta->is_contiguous() &&
                    beta->scalar_type() == px.scalar_type(),
                "beta must be a contiguous (N, S + 1, T + 1) tensor of the dtype of px");
    check_device(*beta, px, "beta");
  }
  const bool have_scale = scale.has_value() && scale->defined();
  if (have_scale) {
    TORCH_CHECK(scale->dim() == 1 && scale->size(0) == p.N && scale->is_contiguous() &&
                    scale->scalar_type() == px.scalar_type(),
                "scale must be a contiguous (N,) tensor of the dtype of px");
    check_device(*scale, px, "scale");
  }
  c10::DeviceGuard guard(px.device());
  const auto opts = px.options();
  at::Tensor px_grad = at::empty({p.N, p.S, p.T + 1}, opts);
  at::Tensor py_grad = at::empty({p.N, p.S + 1, p.T}, opts);
  at::Tensor beta_buf = have_beta ? *beta : at::empty(cells, opts);
  p.alpha = alpha.data_ptr();
  p.beta = beta_buf.data_ptr();
  p.loglik = loglik.data_ptr();
  p.scale = have_scale ? scale->data_ptr() : nullptr;
  p.px_grad = px_grad.data_ptr();
  p.py_grad = py_grad.data_ptr();
  if (p.N == 0) return {px_grad, py_grad};
  if (runs_on_cuda(px)) {
    SFM_RUN_CUDA(mi_backward_cuda(p, !have_beta, current_cuda_stream(px)),
                 "mutual_information_backward");
  } else {
    mi_backward_cpu(p, !have_beta);
  }
  return {px_grad, py_grad};
}

}  // namespace
}  // namespace sfm

// Indirection so that the namespace macro is expanded before TORCH_LIBRARY pastes it.
#define SFM_LIBRARY(ns, m) TORCH_LIBRARY(ns, m)
#define SFM_LIBRARY_IMPL(ns, key, m) TORCH_LIBRARY_IMPL(ns, key, m)

SFM_LIBRARY(SFM_OPS_NAMESPACE, m) {
  m.def(
      "rnnt_row_logprobs(Tensor logits, Tensor targets, Tensor target_lengths, "
      "Tensor logit_lengths, Tensor? ranges, int blank, bool fused, Tensor(a!) out_blank, "
      "Tensor(b!) out_label) -> Tensor");
  m.def(
      "rnnt_logits_grad(Tensor logits, Tensor denom, Tensor targets, Tensor target_lengths, "
      "Tensor logit_lengths, Tensor? ranges, Tensor occ_blank, Tensor occ_label, "
      "Tensor scale, int blank, float clamp, bool fused, Tensor(a!) grad) -> ()");
  m.def(
      "mutual_information_forward(Tensor px, Tensor py, Tensor boundary, bool with_beta) "
      "-> (Tensor, Tensor, Tensor)");
  m.def(
      "mutual_information_backward(Tensor px, Tensor py, Tensor boundary, Tensor alpha, "
      "Tensor? beta, Tensor loglik, Tensor? scale) -> (Tensor, Tensor)");
#if !defined(SPEECHFM_CUDA_EMULATION)
  // CPU only (the emulation build leaves them out, so that its loss runs the CUDA code).
  m.def(
      "rnnt_loss_cpu(Tensor logits, Tensor targets, Tensor target_lengths, "
      "Tensor logit_lengths, Tensor? ranges, int blank, bool fused, bool need_grad, "
      "bool cache_probs) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "rnnt_loss_cpu_backward(Tensor logits, Tensor denom, Tensor targets, "
      "Tensor target_lengths, Tensor logit_lengths, Tensor? ranges, Tensor occ_blank, "
      "Tensor occ_label, Tensor scale, int blank, float clamp, bool fused, "
      "bool grad_holds_probs, Tensor(a!) grad) -> ()");
  m.def(
      "rnnt_simple_cpu(Tensor am, Tensor lm, Tensor targets, Tensor target_lengths, "
      "Tensor logit_lengths, int blank, float lm_scale, float am_scale, bool need_occ) "
      "-> Tensor[]");
  m.def(
      "rnnt_simple_cpu_backward(Tensor e_am, Tensor e_lm, Tensor s_am, Tensor s_lm, "
      "Tensor prod, Tensor occ_x, Tensor occ_y, Tensor targets, Tensor grad_costs, int blank, "
      "float lm_scale, float am_scale) -> (Tensor, Tensor)");
#endif
}

SFM_LIBRARY_IMPL(SFM_OPS_NAMESPACE, CPU, m) {
  m.impl("rnnt_row_logprobs", &sfm::rnnt_row_logprobs);
  m.impl("rnnt_logits_grad", &sfm::rnnt_logits_grad);
  m.impl("mutual_information_forward", &sfm::mutual_information_forward);
  m.impl("mutual_information_backward", &sfm::mutual_information_backward);
#if !defined(SPEECHFM_CUDA_EMULATION)
  m.impl("rnnt_loss_cpu", &sfm::rnnt_loss_cpu);
  m.impl("rnnt_loss_cpu_backward", &sfm::rnnt_loss_cpu_backward);
  m.impl("rnnt_simple_cpu", &sfm::rnnt_simple_cpu);
  m.impl("rnnt_simple_cpu_backward", &sfm::rnnt_simple_cpu_backward);
#endif
}

#if defined(SPEECHFM_WITH_CUDA) && !defined(SPEECHFM_CUDA_EMULATION)
SFM_LIBRARY_IMPL(SFM_OPS_NAMESPACE, CUDA, m) {
  m.impl("rnnt_row_logprobs", &sfm::rnnt_row_logprobs);
  m.impl("rnnt_logits_grad", &sfm::rnnt_logits_grad);
  m.impl("mutual_information_forward", &sfm::mutual_information_forward);
  m.impl("mutual_information_backward", &sfm::mutual_information_backward);
}
#endif
