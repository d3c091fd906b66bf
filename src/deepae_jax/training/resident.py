"""Training with the rating matrix resident on the devices, on a 1-D mesh of any size.

:class:`ResidentEpochs` runs ``train.make_train_step``'s sparse step over an epoch with the
batches gathered on the devices; the helpers place host values and state on a mesh and fetch
replicated metrics.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from deepae_jax.data import batching, device_csr
from deepae_jax.devices import (AXIS, check_batch_size, local_view, one_device_mesh, put_global,
                                replicated_on)
from deepae_jax.core.step import TrainState


class ResidentEpochs:
    """Training with the rating matrix resident on the devices (the sparse paths), on any
    number of devices.

    The CSR matrix is copied once to every device of ``mesh`` (default: one device); each call
    of :meth:`step_fn` gathers the batches of ``steps_per_call`` iterations on the devices from
    the epoch's shuffled permutation and runs them in one ``lax.scan`` (one dispatch, no
    host-to-device batch copies, state buffers donated). On G devices each global batch of B
    rows is G groups of B/G rows (device g: rows [g*B/G, (g+1)*B/G) of the batch), each gathered
    and packed on its own device with group-local row indices (``sparse``'s grouped packed
    layout), so the step's gather-sums are local; the state is replicated and XLA sums the
    gradients across devices. The packed width K follows the real slots: the largest per-group
    rating count over B/G rows in any batch of the run's ``epochs``, rounded up by
    ``batching.bucket_fine``, computed once; an epoch's last call, with fewer iterations, runs
    the same program (its loop stops early), so a run compiles one program (an epoch outside
    ``epochs`` with a wider batch widens K and compiles again).

    Batches, their order and the dropped final partial batch are exactly those of
    ``batching.sparse_batches`` / ``dense_batches``. Use with :func:`train.train_epoch`::

        runner = ResidentEpochs(train.make_train_step(..., path="sparse"), csr, batch_size, seed)
        state, losses = train.train_epoch(state, runner.step_fn, runner.batches(epoch),
                                    runner.num_calls(epoch), epoch)
    """

    def __init__(self, step: Callable, csr, batch_size: int, seed: int,
                 steps_per_call: int = 8, device=None, mesh: Mesh | None = None,
                 epochs: range = range(1)):
        self.mesh = mesh if mesh is not None else one_device_mesh(device)
        self.groups = self.mesh.size
        check_batch_size(batch_size, self.groups)
        self.csr, self.batch_size, self.seed = csr, int(batch_size), int(seed)
        self.steps_per_call = max(1, int(steps_per_call))
        self.replicated = NamedSharding(self.mesh, P())
        self.data = device_csr.DeviceRatings.from_csr(csr, self.replicated)
        self.n_batches = batching.num_batches(csr.shape[0], self.batch_size)
        self.epochs = epochs
        self.width = 0
        by_group = NamedSharding(self.mesh, P(AXIS))
        self._rows_sharding = NamedSharding(self.mesh, P(None, AXIS))

        def one(st, data, r, width):  # r (G, B/G): each group's rows gathered on its own device
            batch = jax.vmap(device_csr.gather_packed, in_axes=(None, 0, None))(data, r, width)
            return step(st, jax.lax.with_sharding_constraint(batch, by_group))

        def multi(state, data, rows, n_steps=None, width=8):
            """The first ``n_steps`` (default: all S) iterations of ``rows`` (S, G, B/G);
            metrics (S, ...), zero after ``n_steps``."""
            shapes = jax.eval_shape(lambda st: one(st, data, rows[0], width)[1], state)
            metrics = jax.tree.map(lambda s: jnp.zeros((rows.shape[0],) + s.shape, s.dtype),
                                   shapes)

            def body(i, carry):
                st, ms = one(carry[0], data, rows[i], width)
                return st, jax.tree.map(lambda buf, m: buf.at[i].set(m), carry[1], ms)
            n = rows.shape[0] if n_steps is None else n_steps
            return jax.lax.fori_loop(0, n, body, (state, metrics))
        self.scan = multi  # (state, data, rows, n_steps, width): one call, not jitted
        self._multi = jax.jit(multi, static_argnums=(4,), donate_argnums=(0,),
                              out_shardings=self.replicated)

    def num_calls(self, epoch: int) -> int:
        """Calls of :meth:`step_fn` per epoch."""
        return -(-self.n_batches // self.steps_per_call)

    def epoch_width(self, epoch: int) -> int:
        """The packed width K of the epoch's batches (slots per row of a group): the run's."""
        if not self.width:
            self.width = batching.run_packed_width(self.csr, self.batch_size, self.seed,
                                                   self.epochs, num_shards=self.groups)
        if epoch not in self.epochs:
            self.width = max(self.width, batching.epoch_packed_width(
                self.csr, self.batch_size, self.seed, epoch, num_shards=self.groups))
        return self.width

    def batches(self, epoch: int):
        """The items to pass to :meth:`step_fn`: (rows (S, G, B/G) on the devices, iterations,
        width); the last call's rows are padded to S."""
        b, g, s = self.batch_size, self.groups, self.steps_per_call
        width = self.epoch_width(epoch)
        perm = batching.epoch_permutation(self.csr.shape[0], self.seed, epoch)
        rows = perm[:self.n_batches * b].astype(np.int32).reshape(self.n_batches, g, b // g)
        rows = np.concatenate([rows, np.zeros((-self.n_batches % s, g, b // g), np.int32)])
        for start in range(0, self.n_batches, s):
            n = min(s, self.n_batches - start)
            yield put_global(rows[start:start + s], self._rows_sharding), n, width

    def real_slots(self, epoch: int) -> tuple[int, int]:
        """(ratings, processed slots G*(B/G)*K) per step of the epoch, averaged over its steps:
        how much of the packed width is padding."""
        counts = np.diff(self.csr.indptr)[batching.epoch_permutation(
            self.csr.shape[0], self.seed, epoch)][:self.n_batches * self.batch_size]
        return (int(counts.sum()) // max(self.n_batches, 1),
                self.batch_size * self.epoch_width(epoch))

    def step_fn(self, state: TrainState, item) -> tuple[TrainState, dict]:
        rows, n, width = item
        # replicated on the mesh like the outputs will be: a fresh (uncommitted) state would
        # otherwise compile the step a second time on the next call
        state = replicated_on(state, self.replicated)
        state, metrics = self._multi(state, self.data, rows,
                                     put_global(np.int32(n), self.replicated), width)
        return state, {**local_view(metrics), "steps": n}
