# Glue between ec's `julia` backend (ec/train/julia.py, through juliacall) and MLPGradientFlow.jl.
#
# Python owns the layout conversion (ec.train.julia.to_mgf): `flat` below is already in
# MLPGradientFlow's order, per layer the matrix [W b] of shape (n_out, n_in + 1) flattened
# column-major. Inputs and targets arrive as (d, n_samples) matrices, MLPGradientFlow's convention.
module ECGlue

using MLPGradientFlow

# Keys are MLPGradientFlow's names as ec.train.julia.JULIA_ACTIVATIONS gives them.
const ACTIVATIONS = Dict{String,Function}(
    "g" => MLPGradientFlow.g,
    "softplus" => MLPGradientFlow.softplus,
    "sigmoid" => MLPGradientFlow.sigmoid,
    "tanh" => tanh,
    "relu" => MLPGradientFlow.relu,
    "gelu" => MLPGradientFlow.gelu,
    "silu" => MLPGradientFlow.silu,
)

# Result entries ec never reads; leaving them out keeps the data from being copied back.
const EXCLUDE = ["input", "target", "init", "ode_x"]

version() = string(pkgversion(MLPGradientFlow))

# ComponentArray with blocks w1, w2, ... of shapes (sizes[i+1], sizes[i] + 1) holding `flat`.
function as_params(sizes, flat)
    p = params(((zeros(sizes[i+1], sizes[i] + 1), nothing) for i in 1:length(sizes)-1)...)
    copyto!(p, flat)
end

"""
    fit(layer_sizes, activation, input, target, flat; tauinv = nothing, kwargs...)

Train an MLP (biases in every layer, identity output) from `flat` with `MLPGradientFlow.train`
and return its result dictionary. `tauinv` (same layout as `flat`, 0 = frozen, 1 = trained)
freezes parameters during the ODE phase; `kwargs` go to `train`.
"""
function fit(layer_sizes, activation, input, target, flat; tauinv = nothing, kwargs...)
    sizes = Int.(collect(layer_sizes))
    f = ACTIVATIONS[activation]
    nl = length(sizes) - 1
    layers = Tuple((sizes[i+1], i == nl ? identity : f, true) for i in 1:nl)
    net = Net(; layers, input = Matrix{Float64}(input), target = Matrix{Float64}(target),
              verbosity = 0)
    x0 = as_params(sizes, Vector{Float64}(flat))
    tau = tauinv === nothing ? nothing : as_params(sizes, Vector{Float64}(tauinv))
    train(net, x0; tauinv = tau, verbosity = 0, show_progress = false,
          save_everystep = false, exclude = EXCLUDE, kwargs...)
end

end # module
