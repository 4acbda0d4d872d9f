// One block of the discriminator's hand-written forward and backward pass, as one native call.
//
// A line-by-line transliteration of engine.accel.blocks.pass_block (read that first: the maths and
// the layout of the gradient slots are explained there). The products and the sigmoids are the same
// ATen calls; the element-wise steps that only read and write memory (LeakyReLU, its derivative,
// and the rows scaled by their loss gradient) are plain loops doing the same float operations, so
// the results are bit-identical to the Python function. What it saves: the per-operation overhead
// of some fifty dispatched operations per block and two passes over memory per hidden layer.
// Built on first use by engine.accel.native (torch.utils.cpp_extension); float32, CPU, contiguous rows.

#include <torch/extension.h>

#include <vector>

using at::Tensor;

namespace {

// The loops below are branch-free (a factor of 1 or the slope: the same floats as a selection) and
// built for the CPU at hand among AVX-512, AVX2 and the x86-64 baseline; with a branch per element
// they took longer than all the products of a block.
#if defined(__x86_64__) && defined(__GNUC__)
#define QCF_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define QCF_CLONES
#endif

// out = out > 0 ? out : out * slope, in place (F.leaky_relu_).
QCF_CLONES void leaky_relu_inplace(float* __restrict__ out, int64_t n, float slope) {
  for (int64_t i = 0; i < n; ++i) out[i] *= out[i] > 0.0f ? 1.0f : slope;
}

// back = result > 0 ? delta : delta * slope (aten::leaky_relu_backward with self_is_result), for a
// delta of `rows` rows that is either (rows, width) contiguous or one row repeated (delta_step 0).
QCF_CLONES void leaky_relu_backward(float* __restrict__ back, const float* __restrict__ delta, int64_t delta_step,
                                    const float* __restrict__ result, int64_t rows, int64_t width, float slope) {
  for (int64_t i = 0; i < rows; ++i) {
    const float* __restrict__ d = delta + i * delta_step;
    const float* __restrict__ r = result + i * width;
    float* __restrict__ b = back + i * width;
    for (int64_t j = 0; j < width; ++j) b[j] = d[j] * (r[j] > 0.0f ? 1.0f : slope);
  }
}

// scaled[i] = [x[i] * g[i], g[i]]: each row's input times its loss gradient, and the bias's input 1 times it.
QCF_CLONES void scale_rows(float* __restrict__ scaled, const float* __restrict__ x, const float* __restrict__ g,
                           int64_t rows, int64_t width) {
  for (int64_t i = 0; i < rows; ++i) {
    const float gi = g[i];
    const float* __restrict__ xi = x + i * width;
    float* __restrict__ si = scaled + i * (width + 1);
    for (int64_t j = 0; j < width; ++j) si[j] = xi[j] * gi;
    si[width] = gi;
  }
}

// Per-thread scratch matrices, kept between calls: fresh megabyte-sized buffers for every block cost
// page faults under the C library's default allocation thresholds (steps 13-30% slower).
Tensor scratch(size_t slot, int64_t rows, int64_t cols, const at::TensorOptions& options) {
  thread_local std::vector<Tensor> buffers;
  if (buffers.size() <= slot) buffers.resize(slot + 1);
  Tensor& buf = buffers[slot];
  if (!buf.defined() || buf.numel() < rows * cols || buf.scalar_type() != options.dtype().toScalarType()) {
    buf = at::empty({rows * cols}, options);
  }
  return buf.narrow(0, 0, rows * cols).view({rows, cols});
}

}  // namespace

void pass_block(const std::vector<Tensor>& weights, const std::vector<Tensor>& biases,
                const std::vector<double>& slopes, const Tensor& w_out, const Tensor& b_out, const Tensor& w_in_t,
                const Tensor& rows, const Tensor& row_weights, double target, const std::vector<Tensor>& grads,
                Tensor logits, const c10::optional<Tensor>& grad_inputs) {
  TORCH_CHECK(rows.scalar_type() == at::kFloat && rows.is_contiguous() && w_out.is_contiguous(),
              "pass_block: float32 contiguous rows and output weights");
  pybind11::gil_scoped_release no_gil;  // the helper threads and the caller run blocks at once
  at::NoGradGuard no_grad;
  const int64_t m = rows.size(0);
  const int64_t n_hidden = static_cast<int64_t>(weights.size());
  std::vector<Tensor> acts{rows};  // inputs, then each hidden layer's output
  for (int64_t k = 0; k < n_hidden; ++k) {
    Tensor z = scratch(4 * k, m, weights[k].size(0), rows.options());
    at::addmm_out(z, biases[k], acts.back(), weights[k].t());
    leaky_relu_inplace(z.data_ptr<float>(), z.numel(), static_cast<float>(slopes[k]));
    acts.push_back(z);
  }
  at::addmv_out(logits, b_out, acts.back(), w_out);
  Tensor g_d = at::sigmoid(logits).sub_(target).mul_(row_weights);
  Tensor last = grads[n_hidden];
  Tensor last_w = last.narrow(0, 0, last.size(0) - 1).select(1, 0);
  at::mv_out(last_w, acts.back().t(), g_d);
  last.select(0, last.size(0) - 1).select(0, 0).copy_(g_d.sum());

  Tensor delta = w_out;  // one row, repeated: the unit logit gradient's delta at the last layer
  int64_t delta_step = 0;
  for (int64_t k = n_hidden - 1; k >= 0; --k) {
    const int64_t out_width = acts[k + 1].size(1), width = acts[k].size(1);
    Tensor back = scratch(4 * k + 1, m, out_width, rows.options());
    leaky_relu_backward(back.data_ptr<float>(), delta.data_ptr<float>(), delta_step, acts[k + 1].data_ptr<float>(),
                        m, out_width, static_cast<float>(slopes[k]));
    Tensor scaled = scratch(4 * k + 2, m, width + 1, rows.options());
    scale_rows(scaled.data_ptr<float>(), acts[k].data_ptr<float>(), g_d.data_ptr<float>(), m, width);
    Tensor grad = grads[k];
    at::mm_out(grad, scaled.t(), back);
    if (k > 0) {
      delta = scratch(4 * k + 3, m, width, rows.options());
      at::mm_out(delta, back, weights[k]);
      delta_step = width;
    } else {
      delta = back;
      delta_step = out_width;
    }
  }
  if (grad_inputs.has_value()) {  // ∂ loss_g / ∂ input of generated rows: unit deltas × ∂ loss_g / ∂ logit
    Tensor unit = n_hidden == 0 ? w_out.expand({m, w_out.size(0)}) : at::mm(w_in_t, delta.t()).t();
    Tensor g_g = at::sigmoid(-logits).mul_(row_weights).neg_();
    Tensor out = *grad_inputs;
    at::mul_out(out, unit, g_g.unsqueeze(1));
  }
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("pass_block", &pass_block, "One block of the discriminator pass (see engine.accel.blocks.pass_block)");
}
