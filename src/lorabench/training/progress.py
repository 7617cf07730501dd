"""What training shows: one progress bar per run (on a terminal) and one line per epoch, instead of the Trainer's
bars and printed log dicts. The Trainer's logged numbers go to the run's log file (`lorabench.console.note`)."""
from __future__ import annotations

import json
import time

from lorabench import console


def progress_callback(label: str, metric: str):
    """A TrainerCallback: a bar over the run's optimiser steps (`console.progress_bar`, resumed runs start at their
    step) and, after each epoch, `  <label> epoch 2/5: train loss 0.4105, val f1 0.7936 (loss 0.4205), 49 s`
    (`metric` = train.metric_for_best_model, shown beside F1 when it is another one; a run with no val rows
    shows the train loss and the time only). Only the main process of a data-parallel run draws and prints."""
    from transformers import TrainerCallback


    class ConsoleProgress(TrainerCallback):
        def __init__(self):
            self.bar = None
            self.loss_sum, self.loss_steps, self.last_logged = 0.0, 0, 0  # the epoch's train loss, step-weighted
            self.t_epoch = time.perf_counter()
            self.epoch_ended = False

        def on_train_begin(self, args, state, control, **kw):
            if state.is_world_process_zero:
                self.bar = console.progress_bar(state.max_steps, initial=state.global_step, desc=label)

        def on_epoch_begin(self, args, state, control, **kw):
            self.loss_sum, self.loss_steps, self.t_epoch, self.epoch_ended = 0.0, 0, time.perf_counter(), False
            self.last_logged = max(self.last_logged, state.global_step)

        def on_step_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kw):
            if not state.is_world_process_zero or not logs:
                return
            if "loss" in logs:  # the mean over the steps since the previous log
                steps = max(state.global_step - self.last_logged, 1)
                self.loss_sum, self.loss_steps = self.loss_sum + float(logs["loss"]) * steps, self.loss_steps + steps
                self.last_logged = state.global_step
            console.note(f"step {state.global_step}: {json.dumps(logs, default=str)}")
            if self.epoch_ended and args.eval_strategy == "no" and "loss" in logs:  # no val: the line is now
                self._line(args, state, [])

        def on_evaluate(self, args, state, control, metrics=None, **kw):
            if not state.is_world_process_zero or not metrics:
                return
            parts = [f"val f1 {metrics['eval_f1']:.4f}"] if "eval_f1" in metrics else []
            if metric not in ("f1", "loss") and f"eval_{metric}" in metrics:
                parts.append(f"val {metric} {metrics[f'eval_{metric}']:.4f}")
            if "eval_loss" in metrics:
                parts.append(f"val loss {metrics['eval_loss']:.4f}")
            self._line(args, state, parts)

        def on_epoch_end(self, args, state, control, **kw):
            # the Trainer logs the loss at logging_steps; ask for a log at every epoch end too, so each epoch's
            # line has its train loss (the mean since the previous log; logging changes nothing trained)
            self.epoch_ended = True
            control.should_log = True

        def on_train_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

        def _line(self, args, state, parts: list[str]) -> None:
            epochs = args.num_train_epochs if args.max_steps <= 0 else None
            epoch = f"epoch {round(state.epoch or 0):g}" + (f"/{epochs:g}" if epochs else "")
            loss = [f"train loss {self.loss_sum / self.loss_steps:.4f}"] if self.loss_steps else []
            self.epoch_ended = False
            console.say(f"  {label} {epoch}: {', '.join(loss + parts)}, {time.perf_counter() - self.t_epoch:.0f} s")

    return ConsoleProgress()
