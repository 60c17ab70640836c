"""Planning: seeds, the baseline (always, once per seed and context), run ids, packs."""

from dataclasses import replace

from l2reg.compose import expand_and_compose
from l2reg.config import Config, ScheduleConfig
from l2reg.sweep import canonical, context, packs, plan, run_id


def planned(*overrides):
    return plan([cfg for _, cfg in expand_and_compose(list(overrides))])


def test_three_alphas_three_seeds_is_nine_runs_with_one_baseline_per_seed():
    runs = planned("alpha=0.0,1e-4,1e-3")
    assert len(runs) == 9
    assert sorted(r.config.seed for r in runs if r.is_baseline) == [0, 1, 2]


def test_baseline_is_added_when_not_listed():
    runs = planned("alpha=1e-4,1e-3", "seeds=2")
    assert len(runs) == 6
    assert [r.config.seed for r in runs[:2]] == [0, 1] and all(r.is_baseline for r in runs[:2])


def test_baseline_is_not_multiplied_by_target_norm_or_schedule():
    runs = planned("alpha=0.0,1e-4", "target=weights,activations,both", "norm=l1,l2",
                   "schedule=constant,exponential", "seeds=2")
    assert sum(r.is_baseline for r in runs) == 2
    assert len(runs) == 2 + 3 * 2 * 2 * 2


def test_swept_seed_replaces_seeds():
    runs = planned("alpha=1e-3", "seed=range(5)")
    assert sorted(r.config.seed for r in runs if not r.is_baseline) == [0, 1, 2, 3, 4]
    assert len(runs) == 10


def test_baseline_per_context():
    runs = planned("alpha=1e-3", "train.epochs=1,2", "seeds=1")
    assert len(runs) == 4
    assert sorted(r.config.train.epochs for r in runs if r.is_baseline) == [1, 2]


def test_run_id_is_readable_and_semantic():
    cfg = replace(Config(), alpha=1e-4, target="weights", seed=2)
    rid = run_id(cfg)
    assert rid.startswith("weights-l2-a0.0001-constant-s2-") and len(rid.split("-")[-1]) == 8
    assert run_id(replace(cfg, name="other", results_dir="x")) == rid  # not semantic
    assert run_id(replace(cfg, train=replace(cfg.train, device="cpu", pack_size=4))) == rid
    assert run_id(replace(cfg, seed=3)) != rid
    assert run_id(replace(cfg, train=replace(cfg.train, epochs=1))) != rid
    # unused schedule fields do not matter; used ones do
    assert run_id(replace(cfg, schedule=ScheduleConfig("constant", gamma=9.0))) == rid
    exp = replace(cfg, schedule=ScheduleConfig("exponential", gamma=1.0))
    assert run_id(replace(exp, schedule=ScheduleConfig("exponential", gamma=2.0))) != run_id(exp)


def test_baseline_canonical_form_ignores_regularizer_fields():
    a = replace(Config(), alpha=0.0, target="weights", norm="l1", schedule=ScheduleConfig("cosine"), seed=0)
    b = replace(Config(), alpha=0.0, seed=0)
    assert run_id(a) == run_id(b) and run_id(a).startswith("baseline-s0-")
    assert canonical(a).target == Config().target


def test_packs_group_by_context_and_respect_size():
    runs = planned("alpha=1e-4,1e-3", "train.epochs=1,2", "seeds=2")
    groups = packs(runs, 3)
    assert sum(len(g) for g in groups) == len(runs) == 12
    assert all(len(g) <= 3 for g in groups)
    assert all(len({str(context(r.config)) for r in g}) == 1 for g in groups)


def test_new_axes_at_their_off_values_keep_the_ids_runs_always_had():
    # ids of runs committed before form, scope, train.dropout and data.train_size existed
    # (results/ablation-quick-12/runs/ holds both files)
    base = replace(Config(), alpha=0.0, seed=0)
    both = replace(Config(), alpha=1e-4, target="both", seed=0)
    assert run_id(base) == "baseline-s0-2d436b8a"
    assert run_id(both) == "both-l2-a0.0001-constant-s0-e2abb4e4"
    assert run_id(replace(both, form="loss", scope="conv")) == run_id(both)


def test_new_axes_change_ids_contexts_and_names_when_not_off():
    from l2reg.sweep import context_label

    cfg = replace(Config(), alpha=1e-4, target="weights", seed=1)
    decoupled = replace(cfg, form="decoupled", scope="all")
    assert run_id(decoupled).startswith("weights-l2-a0.0001-constant-decoupled-scope-all-s1-")
    assert run_id(decoupled) != run_id(cfg)
    no_dropout = replace(cfg, train=replace(cfg.train, dropout=0.0))
    assert run_id(no_dropout).startswith("weights-l2-a0.0001-constant-dropout0-s1-")
    assert context(no_dropout) != context(cfg) and context(decoupled) == context(cfg)
    assert context_label(no_dropout).startswith("epochs=5,train_limit=None,dropout=0-")
    small = replace(cfg, data=replace(cfg.data, train_size=1000))
    assert context_label(small).startswith("epochs=5,train_limit=None,train_size=1000-")
    # the baseline of a decoupled setting is the plain baseline of its context
    assert run_id(replace(decoupled, alpha=0.0)) == run_id(replace(cfg, alpha=0.0))


def test_new_axes_sweep_together():
    runs = planned("form=loss,decoupled", "scope=conv,all", "train.dropout=0,0.5", "alpha=1e-4", "target=weights",
                   "seed=0")
    assert len(runs) == 10 and sum(r.is_baseline for r in runs) == 2
    assert {r.config.train.dropout for r in runs if r.is_baseline} == {0.0, 0.5}
    assert len({r.run_id for r in runs}) == 10


def test_compile_is_decided_per_context_never_per_setting():
    from l2reg.sweep import compile_decision

    runs = planned("alpha=0.0,1e-4", "target=weights,both", "seeds=2")
    assert {compile_decision(r.config, "cpu", 54_000) for r in runs} == {True}  # 5 x 422 steps
    assert {compile_decision(r.config, "cpu", 2_700) for r in runs} == {False}  # 5 x 22 steps
    assert {compile_decision(r.config, "cuda", 54_000) for r in runs} == {False}
    forced = replace(runs[0].config, train=replace(runs[0].config.train, compile=True))
    assert compile_decision(forced, "cuda", 100) is True


def test_scope_cannot_name_a_run_whose_target_has_no_weight_term():
    act = replace(Config(), alpha=1e-3, target="activations", seed=0)
    assert run_id(replace(act, scope="all")) == run_id(act)  # trains exactly alike: one run, one id
    assert canonical(replace(act, scope="all")).scope == "conv"
    runs = planned("alpha=1e-3", "target=weights,activations", "scope=conv,all", "seed=0")
    assert len(runs) == 1 + 2 + 1  # baseline, weights x 2 scopes, activations once


def test_a_context_axis_not_wired_into_the_training_settings_is_refused(monkeypatch):
    import dataclasses

    import pytest

    from l2reg import axes, sweep
    from l2reg.penalties import NotWired

    extra = dataclasses.replace(axes.CONTEXT_AXES[0], key="train.label_smoothing", column="label_smoothing")
    monkeypatch.setattr(axes, "CONTEXT_AXES", (*axes.CONTEXT_AXES, extra))
    with pytest.raises(NotWired, match="context axis 'train.label_smoothing' is declared but not wired"):
        sweep.train_settings(Config(), "cpu", 54_000)
    with pytest.raises(NotWired, match="not wired"):  # refused when planning, before anything trains
        planned("alpha=1e-3", "seed=0")
