"""DistributedOptimizer: pushes gradients from autograd hooks, pulls parameters in step()."""

import bisect
import math
import os
import sys
import threading
import warnings

import torch

import rdmaps
from . import runtime


def _whole(x):
    """An int (numpy's too), or a float with no fractional part (2.0, not 2.7 or True)."""
    return x.is_integer() if isinstance(x, float) else rdmaps._as_int(x) is not None


def _user_stacklevel():
    """warnings.warn's stacklevel for the first frame outside rdmaps.torch and torch: torch wraps step() in its
    own hooks (no_grad, the profiler's), so a fixed level named torch's file, not the user's line."""
    ours = tuple(os.path.dirname(os.path.abspath(f)) + os.sep for f in (__file__, torch.__file__))
    frame, level = sys._getframe(1), 1  # the caller of warnings.warn, as stacklevel=1 is
    while frame is not None and frame.f_code.co_filename.startswith(ours):
        frame, level = frame.f_back, level + 1
    return level


def _check_tensor(what, name, t, numel):
    """The address and byte size of a tensor rdmaps may read or write, or a clear exception."""
    if t.dtype != torch.float32:
        raise TypeError(f"rdmaps.torch: {what} of '{name}' is {t.dtype}; rdmaps moves torch.float32 only")
    if t.device.type not in ("cpu", "cuda") or (t.device.type == "cuda" and not rdmaps.have_cuda):
        raise TypeError(f"rdmaps.torch: {what} of '{name}' is on {t.device}; this build moves CPU tensors"
                        + (" and CUDA tensors" if rdmaps.have_cuda else " only (built without CUDA)"))
    if t.layout != torch.strided:
        raise TypeError(f"rdmaps.torch: {what} of '{name}' has layout {t.layout}; rdmaps moves dense tensors only")
    if not t.is_contiguous():
        # channels_last and other strided layouts: rdmaps moves the table's floats in order.
        fix = "p.data = p.data.contiguous() before making the optimizer" if what == "parameter" else ".contiguous()"
        raise ValueError(f"rdmaps.torch: {what} of '{name}' is not contiguous (torch.channels_last?); rdmaps moves "
                         f"contiguous tensors only: {fix}")
    if t.numel() != numel:
        raise ValueError(f"rdmaps.torch: {what} of '{name}' has {t.numel()} elements, {numel} were declared")
    return t.data_ptr(), t.numel() * 4


def _writable_ranges():
    """The process's writable mappings as sorted (begin, end) pairs, or None where /proc/self/maps is not there."""
    try:
        with open("/proc/self/maps") as maps:
            lines = maps.readlines()
    except OSError:
        return None
    ranges = []
    for line in lines:
        span, perms = line.split(None, 2)[:2]
        if "w" in perms:
            begin, end = (int(x, 16) for x in span.split("-"))
            if ranges and ranges[-1][1] == begin:
                ranges[-1] = (ranges[-1][0], end)
            else:
                ranges.append((begin, end))
    return ranges


def _refuse_read_only(named):
    """A pull writes every parameter: one in read-only memory (torch.from_numpy of a read-only array, a
    read-only mmap) took the process down with a segmentation fault in the middle of a pull."""
    on_host = [(n, t.data) for n, t in named if t.device.type == "cpu" and t.numel()]
    ranges = _writable_ranges() if on_host else None
    if ranges is None:
        return
    begins = [b for b, _ in ranges]
    for name, t in on_host:
        begin, end = t.data_ptr(), t.data_ptr() + 4 * t.numel()
        i = bisect.bisect_right(begins, begin) - 1
        if i < 0 or ranges[i][1] < end:
            raise ValueError(f"rdmaps.torch: parameter '{name}' lies in read-only memory (torch.from_numpy of a "
                             "read-only array, or a read-only mmap?): every pull writes it; give it memory of its "
                             "own (.clone()) before making the optimizer")


def _refuse_shared_memory(named):
    """Two parameters over the same memory (views of one tensor) would be two
    tensors on the servers, updated apart, each pull overwriting the other."""
    spans = sorted((p.data_ptr(), p.data_ptr() + 4 * p.numel(), n) for n, p in named)
    for (_, end, first), (begin, _, second) in zip(spans, spans[1:]):
        if begin < end:
            raise ValueError(f"rdmaps.torch.DistributedOptimizer: parameters '{first}' and '{second}' share memory; "
                             "the servers would train them apart. Make one the other's parameter (tie them), or "
                             "give each its own tensor")


def _storage_address(t):
    return (t.untyped_storage() if hasattr(t, "untyped_storage") else t.storage()).data_ptr()


@torch.no_grad()
def _one_buffer(params):
    """A float32 tensor whose consecutive pieces are `params` (CPU, in table
    order), each parameter's .data made a view of it where it was not one already.

    A pull lands straight in the caller's memory only where the floats a lane
    writes back lie in one registered region as they lie in the table
    (docs/protocol.md "Landing in place"); separate allocations would leave
    every lane whose share spans two parameters to the copy."""
    total = sum(p.numel() for p in params)
    laid_out = all(_storage_address(a) == _storage_address(b) and b.data_ptr() == a.data_ptr() + 4 * a.numel()
                   for a, b in zip(params, params[1:]))
    if laid_out:  # the caller's own flat buffer: keep it
        return params[0].data.as_strided((total,), (1,), params[0].data.storage_offset())
    flat = torch.empty(total, dtype=torch.float32)
    at = 0
    for p in params:
        view = flat[at:at + p.numel()].view_as(p)
        view.copy_(p.data)
        p.data = view
        at += p.numel()
    return flat


def _one_value(groups, key, convert, why):
    """`key` as every parameter group has it now (read at each step, as
    torch's SGD reads it), or a ValueError naming each group's."""
    values = [convert(g[key]) for g in groups]
    if any(v != values[0] for v in values[1:]):
        listed = ", ".join(f"group {i}: {g[key]!r}" for i, g in enumerate(groups))
        raise ValueError(f"rdmaps.torch: parameter groups with different {key} ({listed}) are not supported ({why}); "
                         f"set the same {key} in every group. This step's gradients were not sent")
    return values[0]


_FLOAT32_MAX = rdmaps._FLOAT32_MAX  # pushes carry the rate as a float32
_FLOAT32_TINY = 1.1754943508222875e-38  # the smallest normal float32: the rule's lr must be one (--lr)


def _increment_version(tensor):
    """Autograd's version of `tensor` moves, its values do not (an in-place op on none of them; torch 2
    has a call for it)."""
    tensor.view(-1)[:0].zero_()


if hasattr(torch.autograd, "graph") and hasattr(torch.autograd.graph, "increment_version"):
    _increment_version = torch.autograd.graph.increment_version  # noqa: F811


def _rate(lr, when="; this step's gradients were not sent"):
    try:
        rate = float(lr)  # a number or a one-element tensor, as torch's SGD takes it
    except (TypeError, ValueError):
        rate = math.nan
    if not (math.isfinite(rate) and 0 <= rate <= _FLOAT32_MAX):
        raise ValueError(f"rdmaps.torch: learning rate {lr!r} in param_groups is not a finite number of at least "
                         f"0 within float32's range{when}")
    return rate


def _rule_options(optimizer, dc, lambda_):
    """The servers' update rule from the wrapped optimizer (the servers apply it)."""
    if not isinstance(optimizer, torch.optim.SGD):
        raise TypeError(f"rdmaps.torch.DistributedOptimizer: the servers apply the update, and they implement SGD, "
                        f"momentum and DC-ASGD; wrap a torch.optim.SGD, not {type(optimizer).__name__}")
    groups = optimizer.param_groups
    # Compared as values: a tensor lr (torch 2) is one. Weight decay may differ: the worker adds it.
    made = {"lr": lambda v: _rate(v, when=""), "momentum": float, "dampening": float, "nesterov": bool}
    for key, value in made.items():
        if len({value(g[key]) for g in groups}) > 1:
            raise ValueError(f"rdmaps.torch.DistributedOptimizer: parameter groups with different {key} are not "
                             "supported (the servers apply one rule)")
    g = groups[0]
    if g["nesterov"] or g["dampening"]:
        raise ValueError("rdmaps.torch.DistributedOptimizer: nesterov and dampening are not supported")
    if any(group.get("maximize") for group in groups):  # a group of its own trained by descent
        raise ValueError("rdmaps.torch.DistributedOptimizer: maximize=True is not supported")
    # The rule's lr is what every worker must agree on; each push carries its own rate (_send), so a rate of 0
    # (a warm-up scheduler made before wrapping) declares 1, which no push applies: --lr 0 was refused, and so
    # was a subnormal one (1e-40, which pushes carry as it is).
    rate = _rate(g["lr"], when="")
    options = {"lr": rate if rate >= _FLOAT32_TINY else 1.0}
    if dc in (None, False):
        if lambda_ is not None:  # else dropped without a word
            raise ValueError(f"rdmaps.torch.DistributedOptimizer: lambda_={lambda_!r} is delay compensation's; "
                             "give dc=True or dc='constant' with it, or leave it out")
        if g["momentum"]:
            options.update(rule="momentum", momentum=g["momentum"])
        else:
            options["rule"] = "sgd"
    else:
        if g["momentum"]:
            raise ValueError("rdmaps.torch.DistributedOptimizer: delay compensation (dc=) applies to plain SGD; "
                             "use momentum=0")
        if lambda_ is not None:
            try:  # a number or a one-element tensor; else refused as "--lambda0: 'tensor(0.5000)'", naming no lambda_
                if isinstance(lambda_, (bool, bytes)):
                    raise TypeError
                lambda_ = float(lambda_)
            except (TypeError, ValueError):
                raise TypeError(f"rdmaps.torch.DistributedOptimizer: lambda_={lambda_!r} is not a number") from None
        kind = "adaptive" if dc is True else dc
        if kind == "adaptive":
            options["rule"] = "dc-asgd-a"
            if lambda_ is not None:
                options["lambda0"] = lambda_
        elif kind == "constant":
            options["rule"] = "dc-asgd-c"
            if lambda_ is not None:
                options["lambda"] = lambda_
        else:
            raise ValueError(f"rdmaps.torch.DistributedOptimizer: dc={dc!r}; use True, 'adaptive' or 'constant'")
    return options


class DistributedOptimizer(torch.optim.Optimizer):
    """Wraps a torch.optim.SGD so that the rdmaps servers apply its updates.

    Each gradient is pushed as soon as backward produces it (a hook on the
    parameter's AccumulateGrad node), overlapping communication with the rest of
    backward. step() waits for the pushes, advances the SSP clock (blocking
    while the slowest worker is more than `staleness` steps behind) and loads
    the servers' parameters, fetching them only when the cached copy is too stale.

    staleness: SSP bound (0 = bulk-synchronous, None or math.inf = fully asynchronous).
    dc: delay compensation: True/'adaptive' (DC-ASGD-a), 'constant' (DC-ASGD-c), None.
    lambda_: DC-ASGD lambda0 (adaptive) or lambda (constant).
    backward_passes_per_step: backward passes accumulated locally before a push.
    flat_parameters: True (default) lays the CPU parameters out side by side
    in one buffer, each a view of it (as FSDP's flat parameters), so that
    pulls land straight in them with no copy; references to a parameter's old
    storage (a tensor taken from p.data before) no longer follow it. False
    leaves the storage alone (then only a lane's share inside one parameter
    lands in place).
    config/options: further rdmaps configuration (transport, shard_floats, ...);
    lr, momentum, rule, lambda and staleness come from the wrapped SGD and the
    arguments above and are refused here. Gradients must be dense: an error a
    backward hook meets (a sparse gradient, a dead server) is raised by step().
    Every push carries the optimizer's current learning rate, so learning-rate
    schedulers work as usual (all parameter groups must share one rate).
    """

    def __init__(self, optimizer, named_parameters=None, staleness=0, dc=None, lambda_=None,
                 backward_passes_per_step=1, flat_parameters=True, config=None, **options):
        if not isinstance(optimizer, torch.optim.Optimizer):  # model.parameters() without the SGD around them
            raise TypeError(f"rdmaps.torch.DistributedOptimizer: wrap a torch.optim.SGD instance "
                            f"(DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=...), ...)), not "
                            f"{type(optimizer).__name__}")
        if torch.is_inference_mode_enabled():
            # The gradient hooks cannot be made there; found after connecting, it left the parameters inference
            # tensors and the job one goodbye short of its workers.
            raise RuntimeError("rdmaps.torch.DistributedOptimizer: made under torch.inference_mode(); make it "
                               "outside (it hooks the parameters' gradients)")
        # Share, not copy, the wrapped optimizer's groups and state (properties
        # below: its load_state_dict() replaces them).
        self.optimizer = optimizer
        # What Optimizer.__init__ sets besides param_groups and state (the step
        # hooks' dicts, the profiling wrapper of step()) differs between torch
        # versions; __setstate__ is torch's own way to fill it in for every
        # version, and it leaves param_groups and state alone.
        torch.optim.Optimizer.__setstate__(self, {"defaults": optimizer.defaults})
        self._warned_capturable_if_run_uncaptured = True  # the last thing __init__ sets
        if not _whole(backward_passes_per_step) or backward_passes_per_step < 1:
            raise ValueError(f"backward_passes_per_step={backward_passes_per_step!r} is not a whole number of at "
                             "least 1")
        if not (staleness is None or staleness == math.inf or (_whole(staleness) and staleness >= 0)):
            raise ValueError(f"staleness={staleness!r} is not a whole number of at least 0, None or math.inf")
        if not isinstance(flat_parameters, bool):
            raise TypeError(f"flat_parameters={flat_parameters!r} is not True or False")
        self._passes_per_step = int(backward_passes_per_step)
        self._params = self._name_parameters(named_parameters)
        # As declared to the servers: a parameter resized since (p.data = ...) is named against this.
        self._declared = {name: p.numel() for name, p in self._params}
        self._shapes = {name: p.shape for name, p in self._params}  # autograd's nodes, hooked below, keep these
        self._by_name = dict(self._params)
        rule = _rule_options(optimizer, dc, lambda_)
        # The servers' rule, fixed when they admitted this worker.
        g = optimizer.param_groups[0]
        self._rule_settings = {"momentum": float(g["momentum"]), "dampening": float(g["dampening"]),
                               "nesterov": bool(g["nesterov"])}
        if "maximize" in g:  # torch >= 1.11; set later in param_groups, it trained by descent
            self._rule_settings["maximize"] = False
        self._sent_lr = None  # the rate the pushes carry; follows param_groups (schedulers)

        if not flat_parameters:  # pulls write the parameters where they are (flat ones go to a buffer of our own)
            _refuse_read_only(self._params)
        servers, worker_index, base, timeout, metrics = runtime._worker_connection()
        given = dict(rdmaps._options(config), **options)
        runtime.refuse_decided("rdmaps.torch.DistributedOptimizer", given)  # overwritten below otherwise
        if "metrics" in given:  # else "unknown configuration option '--metrics'"
            raise ValueError("rdmaps.torch.DistributedOptimizer: metrics= is given to rdmaps.torch.init(metrics=), "
                             "which every rank serves")
        base.update(given)
        base.update(rule)
        base["staleness"] = math.inf if staleness is None or staleness == math.inf else int(staleness)
        self._worker = rdmaps.Worker(servers, worker_index, base, timeout=timeout, metrics=metrics)
        self._pid = os.getpid()
        try:
            for name, p in self._params:
                self._worker.declare(name, self._declared[name])
            # Pulls land in registered memory (over tcp, and by put where put_landing allows); the worker
            # holds what it registered until closed.
            on_host = [p for _, p in self._params if p.device.type == "cpu"]
            if flat_parameters and on_host:
                flat = _one_buffer(on_host)
                _refuse_read_only(self._params)  # a buffer the caller laid them out in is kept
                self._worker._register_memory(flat.data_ptr(), flat.numel() * 4, flat)
            else:
                for p in on_host:
                    self._worker._register_memory(p.data_ptr(), p.numel() * 4, p.data)
            self._worker.connect()
        except BaseException:
            self._worker.close()  # nothing half-made stays behind: a corrected retry may connect
            raise
        self._interrupted = False  # a Ctrl-C ended a wait and no step() finished since
        self._abandoned_by = None  # what ended that wait: raised by a hook at once, not kept for step()
        # One thread waits for the pushes at a time: load_latest() from an evaluation thread beside the
        # training thread's backward took the same entry twice (IndexError, or a gradient let go mid-push).
        self._draining = threading.Lock()
        self._abandoned_pulls = []  # the parameters of pulls whose wait a Ctrl-C ended
        self._started = False  # broadcast_parameters() or a step() came: the first step checks its start
        # everything -> ([(name, address, bytes)], their tensors), made by the first _load_parameters()
        self._pull_targets = {}
        self._trained = [(n, p) for n, p in self._params if p.requires_grad]  # what a step pulls
        self._loaded_all = False  # frozen parameters too, once: _load_parameters()

        self._pending = []  # (ticket, tensor kept alive until the push is done)
        self._stranded = []  # tensors of failed pushes, kept until the worker is closed
        self._passes = {}  # name -> backward passes seen this step
        self._settings = None  # this step's (weight_decay, lr): _step_settings()
        self._warned_late_settings = False  # said once: lr or weight_decay changed between backward() and step()
        self._extra = {}  # name -> first gradient count beyond backward_passes_per_step (step() raises)
        # The first error a backward hook met: step() raises it, since an exception
        # thrown inside backward leaves torch 1.13 an autograd graph that hangs the process at exit.
        self._hook_error = None
        self._grad_nodes = []  # AccumulateGrad nodes; the hooks live as long as these
        self._hook_handles = []  # removed when the worker leaves: later backward passes push nothing
        self._hooked = set()  # id() of the parameters whose gradients are pushed
        self._sync_queued = False  # this backward ends by waiting for its pushes (_end_of_backward)
        self._sent = []  # names pushed since the last step(), in order
        self._sent_grads = {}  # name -> (p.grad, its _version) when pushed: a change after is said once
        self._warned_changed_grad = False
        try:
            for name, p in self._params:
                if p.requires_grad:
                    self._hook(name, p)
        except BaseException:
            self._worker.close()  # as above: a retry may connect
            raise
        runtime._adopt(self)  # from here on, shutdown() closes it

    @property
    def metrics_address(self):
        """host:port of this worker's GET /metrics (rdmaps.torch.init(metrics=)); "" when off."""
        return self._worker.metrics_address

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, groups):
        self.optimizer.param_groups = groups

    @property
    def state(self):
        return self.optimizer.state

    @state.setter
    def state(self, state):
        self.optimizer.state = state

    # ---- set-up -----------------------------------------------------------------

    def _name_parameters(self, named_parameters):
        in_optimizer = [p for g in self.param_groups for p in g["params"]]
        if named_parameters is None:
            named = [(f"param.{i}", p) for i, p in enumerate(in_optimizer)]
        else:
            try:
                named = [(n, p) for n, p in named_parameters]
            except (TypeError, ValueError):
                raise TypeError(f"rdmaps.torch.DistributedOptimizer: named_parameters of type "
                                f"{type(named_parameters).__name__} is not (name, parameter) pairs "
                                "(model.named_parameters(); a dict: .items())") from None
        names = [n for n, _ in named]
        if len(set(names)) != len(names):
            raise ValueError("rdmaps.torch.DistributedOptimizer: named_parameters has duplicate names")
        by_id = {id(p): n for n, p in named}
        missing = [i for i, p in enumerate(in_optimizer) if id(p) not in by_id]
        if missing:
            raise ValueError(f"rdmaps.torch.DistributedOptimizer: {len(missing)} of the optimizer's parameters are "
                             "not in named_parameters (pass model.named_parameters() of the same model)")
        wanted = {id(p) for p in in_optimizer}
        # One parameter under two names (tied, in lists of two models): the
        # first name, as model.named_parameters() gives a tied one once.
        first = {}
        for n, p in named:
            first.setdefault(id(p), n)
        named = [(n, p) for n, p in named if id(p) in wanted and first[id(p)] == n]
        for n, p in named:
            _check_tensor("parameter", n, p.data, p.numel())
        named = [(n, p) for n, p in named if p.numel()]  # an empty one has nothing to train
        _refuse_shared_memory(named)
        return named

    def _hook(self, name, p):
        with torch.enable_grad():  # under torch.no_grad() expand_as has no grad_fn
            node = p.expand_as(p).grad_fn.next_functions[0][0]  # p's AccumulateGrad

        def pushed_after_accumulate(*_):
            self._in_hook(self._on_gradient, name, p)
            if not self._sync_queued:
                # backward() returns once its pushes are sent: clipping or
                # unscaling p.grad after it then changes nothing sent (it read
                # p.grad while the push was still reading it: the servers got a mix).
                self._sync_queued = True
                torch.autograd.Variable._execution_engine.queue_callback(self._end_of_backward)

        def before_accumulate(grad):
            # A gradient beyond backward_passes_per_step would change p.grad under
            # a push still reading it: let that push finish first.
            if self._passes.get(name, 0) >= self._passes_per_step:
                self._in_hook(self.synchronize)
            return grad

        self._hook_handles.append(p.register_hook(before_accumulate))  # runs before AccumulateGrad adds into p.grad
        self._hook_handles.append(node.register_hook(pushed_after_accumulate))
        self._grad_nodes.append(node)
        self._hooked.add(id(p))

    def _count_afresh(self):
        """The next backward starts a step: after step(), or zero_grad() after a skipped one."""
        self._passes.clear()
        self._sent.clear()  # a loop of backward passes without step() must not grow it
        self._sent_grads.clear()
        self._settings = None
        self._sync_queued = False  # a backward that raised (out of memory) never ran its callback

    def _end_of_backward(self):
        self._sync_queued = False
        # After a Ctrl-C that no step has finished since, the pushes queue behind
        # the abandoned clock or pull: waiting here would wait out the timeout.
        if not self._interrupted:
            self._in_hook(self.synchronize)
        self._note_sent_gradients()

    def _note_sent_gradients(self):
        """p.grad of each parameter pushed, as backward left it, for step() to tell a change after. Taken once
        backward ended, not at the push: gradients autograd made as views of one buffer (torch.cat of parameters)
        share a version counter, which a sibling's accumulation later in the same backward moved."""
        for name in self._sent:
            grad = self._by_name[name].grad
            if name not in self._sent_grads and grad is not None:
                self._sent_grads[name] = (grad, grad._version)

    def _changed_gradient(self):
        """The name of the first parameter whose p.grad is not as _note_sent_gradients() saw it, or None."""
        for name, (grad, version) in self._sent_grads.items():
            now = self._by_name[name].grad
            if now is not grad or now._version != version:
                return name
        return None

    def _in_hook(self, work, *args):
        try:
            work(*args)
        except Exception as e:  # raised by step() (_hook_error); the first one is the cause
            if e is self._abandoned_by:
                raise  # a signal handler's, for the trainer now, as Ctrl-C's is (step() raised it 40 s on)
            if self._hook_error is None:
                self._hook_error = e

    # ---- the data path ----------------------------------------------------------

    def _on_gradient(self, name, p):
        seen = self._passes.get(name, 0) + 1
        self._passes[name] = seen
        if seen > self._passes_per_step:
            self._extra.setdefault(name, seen)  # raised by step(), as _hook_error
            return
        if seen < self._passes_per_step or p.grad is None:
            return  # step() sends what fewer passes than backward_passes_per_step left
        self._send(name, p)

    def _read_settings(self):
        """(weight_decay by parameter, lr) as param_groups hold them now."""
        # Each group's own: the worker adds it to the gradient ("no decay for biases" groups).
        weight_decay = {id(p): decay for g in self.param_groups if (decay := float(g["weight_decay"]))
                        for p in g["params"]}
        return weight_decay, _one_value(self.param_groups, "lr", _rate, "the servers apply one rate per push")

    def _settings_changed(self, used):
        try:
            return self._read_settings() != used
        except (TypeError, ValueError):  # refused, with its reason, by the next step's first push
            return True

    def _step_settings(self):
        """(weight_decay, lr) as param_groups hold them now (set by hand, a scheduler, load_state_dict()), as
        torch's SGD reads them, once a step (not once a parameter); the rule's settings checked unchanged."""
        if self._settings is None:
            weight_decay, rate = self._read_settings()
            for key, fixed in self._rule_settings.items():
                now = _one_value(self.param_groups, key, type(fixed), "the servers apply one rule")
                if now != fixed:
                    cycled = (" (a scheduler that cycles momentum, as OneCycleLR and CyclicLR do unless given "
                              "cycle_momentum=False?)" if key == "momentum" else "")
                    raise ValueError(f"rdmaps.torch: {key} is {now!r} in param_groups, {fixed!r} when the "
                                     f"DistributedOptimizer was made{cycled}: it is the servers' update rule, fixed "
                                     f"when they admitted this worker; restart the job (servers and workers) to change it. "
                                     f"This step's gradients were not sent")
            self._settings = (weight_decay, rate)
        return self._settings

    def _send(self, name, p):
        self._sent.append(name)
        grad = p.grad
        if self._passes_per_step > 1:
            grad = grad / self._passes_per_step
        decay, rate = self._step_settings()
        weight_decay = decay.get(id(p), 0.0)
        if weight_decay:
            grad = torch.add(grad, p.detach(), alpha=weight_decay)
        if rate != self._sent_lr:  # a scheduler changed it: the servers apply the worker's rate
            # Waited for with the pushes: a rate the worker refuses is raised by step(), not ignored.
            self._pending.append((self._worker._submit_learning_rate(rate), None))
            self._sent_lr = rate
        address, nbytes = _check_tensor("gradient", name, grad, self._declared[name])
        if grad.is_cuda:  # autograd wrote it on the current stream; rdmaps reads it on its own
            torch.cuda.current_stream(grad.device).synchronize()
        self._pending.append((self._worker._submit_push(name, address, nbytes), grad))

    def _send_unreached(self):
        # torch's SGD steps every parameter whose .grad is set. One that
        # backward reached in fewer than backward_passes_per_step passes (used
        # in some micro-batches only) would otherwise never be sent, and one it
        # did not reach at all may hold zeros (zero_grad() of torch 1.13), with
        # which momentum and weight decay still move it. Sent here, before the
        # clock, as torch would apply them.
        for name, p in self._params:
            if (p.grad is not None and id(p) in self._hooked and name not in self._extra
                    and self._passes.get(name, 0) < self._passes_per_step):
                self._send(name, p)

    def synchronize(self):
        """Waits until every gradient pushed so far left this process."""
        # Each gradient stays referenced until its push is done, also when a
        # wait is interrupted (Ctrl-C): the push goes on reading it.
        with self._draining:
            while self._pending:
                ticket, _ = self._pending[0]
                try:
                    self._worker.wait(ticket)
                except rdmaps.Error as e:
                    _, tensor = self._pending.pop(0)
                    if not isinstance(e, rdmaps.InvalidArgument):
                        # Failed, not refused: its send may still be under way (a stopped server) and read the
                        # tensor until the worker is closed.
                        self._stranded.append(tensor)
                    raise
                except BaseException as e:
                    self._abandon(e)
                    raise
                del self._pending[0]

    def _abandon(self, e):
        """A wait ended by the trainer, not the worker: Ctrl-C, or whatever a signal handler raised (sys.exit in a
        SIGTERM handler, a Preempted exception). Each counts as Ctrl-C does: exit then waited out the whole
        timeout behind the abandoned operation for anything but KeyboardInterrupt."""
        self._interrupted = True
        self._abandoned_by = e

    def _refuse_after_shutdown(self, call):
        if self._worker.closed:  # else the worker's "was closed" names no cause
            raise RuntimeError(f"rdmaps.torch: {call} after shutdown(): this worker left the job")

    @torch.no_grad()
    def step(self, closure=None):
        self._refuse_after_shutdown("step()")
        loss = None
        propagating = None
        try:
            # Inside: a closure that raises after its backward passes must not
            # leave them counted against the next step's (what they pushed is sent).
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            try:
                self._send_unreached()
                self.synchronize()
                self._note_sent_gradients()
            except Exception:
                # What a hook met first is what step() raises (a wait that failed
                # after it, a dead server, shows as its context): it was lost.
                first, self._hook_error = self._hook_error, None
                if first is None:
                    raise
                raise first  # noqa: B904 - the failure above is this one's context, not its cause
            used = self._settings
            changed = self._changed_gradient()
        except BaseException as e:
            propagating = e
            raise
        finally:  # a failed step must not leave the next one counting its gradients, or its errors
            self._count_afresh()
            error, self._hook_error = self._hook_error, None
            # Raised by the closure or a Ctrl-C, what a hook met first is said, not dropped.
            if error is not None and propagating is not None and error is not propagating:
                warnings.warn(f"rdmaps.torch: step() raised {type(propagating).__name__}; a backward pass before it "
                              f"had failed too: {error}", RuntimeWarning, stacklevel=_user_stacklevel())
        if error is not None:
            raise error
        if changed is not None and not self._warned_changed_grad:
            self._warned_changed_grad = True
            warnings.warn(f"rdmaps.torch: p.grad of '{changed}' changed after backward() pushed it "
                          "(clip_grad_norm_, GradScaler.unscale_, an in-place edit?): the servers apply gradients as "
                          "backward() left them, so the change is lost (unless it left the values as they were). "
                          "Change the gradient inside backward (a hook registered with p.register_hook before making "
                          "the optimizer) or scale the loss", RuntimeWarning, stacklevel=_user_stacklevel())
        # Sent during backward(), with what param_groups held then: torch's SGD reads them in step().
        if used is not None and not self._warned_late_settings and self._settings_changed(used):
            self._warned_late_settings = True
            warnings.warn("rdmaps.torch: lr or weight_decay changed between backward() and step(): this step's "
                          "gradients were sent during backward() with the values before; the new ones apply from "
                          "the next step. Change them before backward() (a scheduler stepped after step() does)",
                          stacklevel=_user_stacklevel())
        unsent = [p for g in self.param_groups for p in g["params"]
                  if p.grad is not None and p.numel() and id(p) not in self._hooked]
        if unsent:
            declared = {id(p): n for n, p in self._params}
            what = ", ".join(f"'{declared[id(p)]}'" if id(p) in declared else f"a tensor of shape {tuple(p.shape)}"
                             for p in unsent[:3])
            raise RuntimeError(f"rdmaps.torch: {len(unsent)} parameter(s) have gradients the servers never get ({what}"
                               f"{', ...' if len(unsent) > 3 else ''}): added with add_param_group() or unfrozen "
                               "after the optimizer was made; make it after the model's parameters are final")
        if self._extra:
            extra, self._extra = self._extra, {}
            name, seen = next(iter(extra.items()))
            raise RuntimeError(f"rdmaps.torch: '{name}' (and {len(extra) - 1} more) got gradient {seen} before step(); "
                               f"it was not sent: call step() after every {self._passes_per_step} backward pass(es) "
                               "(backward_passes_per_step)")
        if not self._started:
            self._started = True
            # Its pull would overwrite the model's initial values with the servers' zeros, without a word.
            if not self._worker.stats()["servers_holding"]:
                warnings.warn("rdmaps.torch: step() before broadcast_parameters(): unless this worker joined a "
                              "job already training, the servers' parameters start from zeros and this pull "
                              "replaces the model's initial values; call "
                              "rdmaps.torch.broadcast_parameters(model.state_dict()) after making the optimizer",
                              RuntimeWarning, stacklevel=_user_stacklevel())
        self._worker._submit_clock()
        self._load_parameters()  # waits for the clock too: operations run in order
        self._interrupted = False  # whatever a Ctrl-C abandoned is done: this step came after it
        self._abandoned_by = None
        return loss

    def _load_parameters(self, everything=False):
        # A parameter frozen when the optimizer was made (an EMA teacher, a
        # frozen backbone) trains nowhere: a step's pull overwrote what the
        # trainer set it to with the broadcast value. It is loaded once: by a
        # broadcast, or by the first pull of a worker that joined a job
        # already training (its backbone is the job's, not its own random one).
        everything = everything or not self._loaded_all
        params = self._params if everything else self._trained
        targets, pulled_into = self._pull_targets.get(everything, ([], []))
        # A parameter whose storage was replaced (p.data = ...) is checked again.
        if not targets or [p.data_ptr() for _, p in params] != [address for _, address, _ in targets]:
            targets = [(n,) + _check_tensor("parameter", n, p.data, self._declared[n]) for n, p in params]
            _refuse_read_only(params)
            pulled_into = [p.data for _, p in params]  # their memory, for a pull a Ctrl-C abandons
            self._pull_targets[everything] = (targets, pulled_into)
        # Kernels queued on torch's stream may still read the parameters (an evaluation's forward) that the
        # pull, on rdmaps' own stream, overwrites.
        for device in {p.device for _, p in params if p.is_cuda}:
            torch.cuda.current_stream(device).synchronize()
        # One batched pull: one request per server lane for the whole model.
        try:
            if targets:
                self._worker.wait(self._worker._submit_pulls(targets))
            else:  # every parameter frozen: the clock before is still waited for
                self._worker.wait_all()
        except rdmaps.Error:
            raise
        except BaseException as e:
            self._abandon(e)
            # The pull writes the parameters until it ends: their memory stays
            # referenced until a later pull returns (a model moved or dropped
            # after the Ctrl-C gave it to other tensors, which the pull
            # overwrote; a GPU model's, and a CPU one's whose p.data was
            # replaced, is not registered). Not in _pending: zero_grad() would
            # wait for it.
            self._abandoned_pulls.append(pulled_into)
            raise
        self._abandoned_pulls.clear()  # done before this one: operations run in order
        self._loaded_all = self._loaded_all or everything
        # The pull wrote the parameters behind autograd's back: as torch.optim's
        # in-place update does, their version moves, so a backward through a
        # graph made before it (retain_graph) is refused instead of mixing the
        # new values with the old graph's.
        with torch.no_grad():
            for _, p in params:
                _increment_version(p)

    def zero_grad(self, *args, **kwargs):
        for name, p in self._params:
            # Else the next backward failed inside autograd ("invalid gradient ... expected shape"), naming neither.
            if id(p) in self._hooked and p.shape != self._shapes[name]:
                raise ValueError(f"rdmaps.torch: parameter '{name}' has shape {tuple(p.shape)} now, "
                                 f"{tuple(self._shapes[name])} when the DistributedOptimizer was made: the servers "
                                 "and its gradient hook keep that shape; make the optimizer after the model's "
                                 "parameters are final")
        self.synchronize()  # a push in flight still reads the gradient
        # A step skipped after a backward (a bad batch, GradScaler finding
        # infs): its gradients were pushed and stay applied; the next backward
        # counts from zero (it was taken for a pass too many and not sent).
        self._count_afresh()
        self._extra.clear()
        self.optimizer.zero_grad(*args, **kwargs)  # with this torch's default for set_to_none

    @torch.no_grad()
    def _broadcast(self, state_dict, is_root):
        by_name = self._by_name
        by_address = {p.data_ptr(): n for n, p in self._params}

        def parameter(key, value):
            if not isinstance(value, torch.Tensor):  # a module's get_extra_state(): no parameter
                return None
            return key if key in by_name else by_address.get(value.data_ptr())

        # Matched by name, else by the tensor itself; a parameter nothing matches
        # would start from zeros on every worker.
        matched = {parameter(key, value) for key, value in state_dict.items()}
        unmatched = [n for n, _ in self._params if n not in matched]
        if unmatched:
            raise ValueError(f"rdmaps.torch.broadcast_parameters: no value for {len(unmatched)} parameter(s) of the "
                             f"optimizer ({', '.join(repr(n) for n in unmatched[:3])}{', ...' if len(unmatched) > 3 else ''}"
                             "): pass the model's own state_dict(), taken after the optimizer was made (it moves the "
                             "parameters into one buffer), or name the parameters as its keys "
                             "(DistributedOptimizer(..., model.named_parameters()))")
        if is_root:
            # Every entry checked before any is sent: one refused after the others
            # left the servers half set, and the other workers trained from that.
            entries = []
            for key, value in state_dict.items():
                name = parameter(key, value)
                if name is None:
                    continue
                value = value.detach()
                address, nbytes = _check_tensor("state_dict entry", key, value, self._declared[name])
                if value.shape != by_name[name].shape:  # a transposed weight has as many elements
                    raise ValueError(f"rdmaps.torch.broadcast_parameters: state_dict entry '{key}' has shape "
                                     f"{tuple(value.shape)}, parameter '{name}' {tuple(by_name[name].shape)}")
                entries.append((name, address, nbytes, value))
            if self._worker.stats()["servers_holding"]:
                # Resumed from a checkpoint, or trained before this worker joined: the root's initial values went
                # over the trained model without a word (and its next checkpoint pruned the good one). As
                # rdmaps-train's worker 0, training goes on from the servers' model.
                entries = []
                warnings.warn("rdmaps.torch.broadcast_parameters: the servers hold a model (resumed from a checkpoint, "
                              "or trained before this worker joined): training goes on from it; this state_dict "
                              "was not sent", RuntimeWarning, stacklevel=_user_stacklevel())
            for name, address, nbytes, value in entries:
                if value.is_cuda:  # written on torch's stream (a load_state_dict()); rdmaps reads it on its own
                    torch.cuda.current_stream(value.device).synchronize()
                # Kept with the pushes' tickets: a Ctrl-C during the waits left the
                # init reading a state_dict the caller may have dropped.
                self._pending.append((self._worker._submit_init(name, address, nbytes), value))
            self.synchronize()
        self._started = True  # not before: a refused broadcast leaves step()'s warning in place
        self._barrier()
        self._load_parameters(everything=True)  # frozen parameters too: every worker starts from the root's

    def load_latest(self, into=None):
        """Waits until every live worker reached this point, then loads the
        servers' parameters (e.g. before evaluating a model trained asynchronously);
        those frozen when the optimizer was made only if nothing loaded them yet.

        into: a copy to load instead (a module whose named_parameters() carry
        the optimizer's names, or a dict of name -> tensor), e.g. from an
        evaluation thread beside training: it waits for this worker's own
        pushes only, not for the others, and leaves the trained model alone.
        Its frozen parameters are the trained model's, once that loaded them."""
        self._refuse_after_shutdown("load_latest()")
        if into is not None:
            self._load_copy(self._copy_targets(into))
            return
        self.synchronize()
        self._barrier()
        self._load_parameters()

    def _copy_targets(self, into):
        """`into`'s tensor for each of the optimizer's parameters, by name, checked as a pull's target."""
        what = "load_latest(into=)"
        if isinstance(into, torch.nn.Module):
            given = dict(into.named_parameters())
        else:
            try:
                given = dict(into.items() if hasattr(into, "items") else into)
            except (TypeError, ValueError):
                raise TypeError(f"rdmaps.torch: {what} of type {type(into).__name__} is not a module, a dict of "
                                "tensors or (name, tensor) pairs") from None
        missing = [n for n, _ in self._params if n not in given]
        if missing:
            shown = ", ".join(repr(n) for n in missing[:5]) + (" and more" if len(missing) > 5 else "")
            unnamed = " (the optimizer was made without named_parameters: its names are param.0, param.1, ...)"
            raise ValueError(f"rdmaps.torch: {what} has no parameter named {shown}"
                             + (unnamed if missing[0] == "param.0" else ""))
        targets = []
        for name, p in self._params:
            t = given[name]
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"rdmaps.torch: {what}'s '{name}' is a {type(t).__name__}, not a tensor")
            targets.append((name, t))  # itself, not .data: its autograd version moves below
            t = t.data
            if tuple(t.shape) != tuple(self._shapes[name]):
                raise ValueError(f"rdmaps.torch: {what}'s '{name}' has shape {tuple(t.shape)}, the parameter "
                                 f"{tuple(self._shapes[name])}")
            if t.numel() and t.data_ptr() == p.data.data_ptr():
                raise ValueError(f"rdmaps.torch: {what}'s '{name}' is the trained model's own parameter: "
                                 "load_latest() without into= loads that")
            _check_tensor(what + " tensor", name, t, self._declared[name])
        _refuse_read_only(targets)
        return targets

    def _load_copy(self, targets):
        # Trained parameters from the servers; frozen ones as the trained model holds them (an EMA teacher the
        # trainer updates) once a load set them, as load_latest() leaves them.
        trained = {n for n, _ in self._trained}
        pulled = [(n, t) for n, t in targets if n in trained or not self._loaded_all]
        copied = [(n, t) for n, t in targets if n not in trained and self._loaded_all]
        self.synchronize()
        for device in {t.device for _, t in pulled if t.is_cuda}:
            torch.cuda.current_stream(device).synchronize()  # an evaluation's forward may still read the copy
        try:
            if pulled:
                self._worker.wait(self._worker._submit_pulls(
                    [(n, t.data.data_ptr(), t.numel() * 4) for n, t in pulled]))
        except rdmaps.Error:
            raise
        except BaseException as e:
            self._abandon(e)
            self._abandoned_pulls.append([t.data for _, t in pulled])  # written until the pull ends, as a step's
            raise
        with torch.no_grad():
            for name, t in copied:
                t.data.copy_(self._by_name[name].data)
            for _, t in targets:
                _increment_version(t)

    def _barrier(self):
        try:
            self._worker.barrier()
        except rdmaps.Error:
            raise
        except BaseException as e:
            # As a step's: later pushes queue behind the abandoned barrier, and a
            # backward waiting for them waited out the timeout.
            self._abandon(e)
            raise

    def stats(self):
        """This worker's counters (pushes, pulls, pulls skipped, clock wait, push paths)."""
        self._refuse_after_shutdown("stats()")
        return self._worker.stats()

    def _close(self):
        for handle in self._hook_handles:  # they held this optimizer and its buffers for the model's life
            handle.remove()
        self._hook_handles.clear()
        if os.getpid() != self._pid:  # a forked child: the connections are the parent's, nothing to wait for
            self._worker.close()
        elif not self._worker.closed:
            try:
                # After a Ctrl-C that no step has finished since, later pushes queue behind the abandoned
                # clock or pull: waiting for them waited out the timeout (300 s) at exit. close() ends them.
                if not self._interrupted:
                    self.synchronize()  # raises if a server died with pushes in flight: say so, but leave anyway
                # ... or a backward's own wait for its pushes met that (_end_of_backward)
                error, self._hook_error = self._hook_error, None
                if error is not None:  # any kind: a hook's TypeError meant gradients never sent
                    raise error
            finally:
                self._worker.close()
                self._stranded.clear()

    # The servers own the optimizer state; these keep a scheduler or checkpoint code working.
    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict):
        self.optimizer.load_state_dict(state_dict)

    def __getstate__(self):
        # A copy would share the servers' connection with the original and
        # lack the wrapped optimizer: refuse rather than make a broken object.
        raise TypeError("rdmaps.torch.DistributedOptimizer cannot be pickled or copied: it holds this worker's "
                        "connection to the servers; save state_dict() instead")

    def __repr__(self):
        return f"rdmaps.torch.DistributedOptimizer({self.optimizer!r})"
