"""pmi figures, built from a ProbeResult alone so saved results can be re-plotted."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.figures import COLORWAY, TEMPLATE, new_figure, token_heatmap
from workbench.results import ProbeResult

MAP_COLOURINGS = ("entity", "kind", "support", "slot", "step")
"""What the slot map can be coloured by: the held fact's person, its kind (move/take/drop/
question), whether it supports the answer, the slot index, the step."""


# -- helpers -----------------------------------------------------------------------------------
def example_tokens(result: ProbeResult, story: int) -> list[str]:
    a = result.arrays
    return a["ex_tokens"][story, : int(a["ex_n_tokens"][story])].tolist()


def example_caption(result: ProbeResult, story: int) -> str:
    a = result.arrays
    tokens = example_tokens(result, story)
    question = " ".join(t for t, s in zip(tokens, a["ex_sentence"][story], strict=False) if s == -1)
    verdict = "right" if a["ex_answer"][story] == a["ex_prediction"][story] else "wrong"
    return (
        f"story {story} ({a['ex_task'][story]}): “{question}” answer "
        f"<b>{a['ex_answer'][story]}</b>, model says <b>{a['ex_prediction'][story]}</b> ({verdict})"
    )


def held_entity(result: ProbeResult, story: int) -> np.ndarray:
    """(S, N) entity each slot holds (the person of its fact, or 'question')."""
    a = result.arrays
    return a["ex_entity_of_fact"][story][a["ex_holding"][story]]


def held_fact(result: ProbeResult, story: int) -> np.ndarray:
    """(S, N) text of the fact each slot holds."""
    a = result.arrays
    return a["ex_facts"][story][a["ex_holding"][story]]


def _title_room(fig: go.Figure, lines: float) -> go.Figure:
    """Top margin for a title of ``lines`` lines, so subtitles never overlap the plot."""
    fig.update_layout(margin={"t": 40 + 28 * lines})
    return fig


# -- accuracy ----------------------------------------------------------------------------------
def accuracy_figure(result: ProbeResult) -> go.Figure:
    """PMI and control accuracy per task, with majority-answer and uniform chance."""
    a = result.arrays
    tasks = a["task_names"].tolist()
    fig = new_figure(
        title="Held-out accuracy: PMI-Transformer vs the same-size Transformer"
        "<br><sup>black dash: always the task's most common answer; grey dot: uniform guess "
        "among the task's answers</sup>",
        yaxis_title="accuracy on held-out stories",
        xaxis_title="task",
        barmode="group",
        yaxis_range=[0, 1.05],
    )
    fig.add_trace(
        go.Bar(x=tasks, y=a["accuracy_by_task"], name=f"PMI ({result.provenance['model_spec']})")
    )
    if "control_accuracy_by_task" in a:
        fig.add_trace(
            go.Bar(
                x=tasks,
                y=a["control_accuracy_by_task"],
                name=f"Transformer control ({result.provenance.get('control_spec', 'control')})",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=tasks,
            y=a["chance_majority_by_task"],
            mode="markers",
            marker={"symbol": "line-ew-open", "size": 40, "color": "black", "line": {"width": 3}},
            name="chance: majority answer",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=tasks,
            y=a["chance_uniform_by_task"],
            mode="markers",
            marker={"symbol": "circle", "size": 8, "color": "#7F7F7F"},
            name="chance: uniform guess",
        )
    )
    fig.update_layout(legend={"orientation": "h", "y": -0.2})
    return fig


def ablation_figure(result: ProbeResult) -> go.Figure:
    """Accuracy with each read path zeroed at every step, against majority chance."""
    a, m = result.arrays, result.metrics
    fig = new_figure(
        title="Which memory does the answer need?<br><sup>accuracy with one read path zeroed "
        "at every step; dashed: majority-answer chance</sup>",
        yaxis_title="accuracy",
        xaxis_title="intervention",
        yaxis_range=[0, 1.05],
    )
    colours = [COLORWAY[0], *[COLORWAY[3]] * (len(a["ablation_names"]) - 1)]
    fig.add_trace(
        go.Bar(
            x=a["ablation_names"],
            y=a["ablation_accuracy"],
            marker_color=colours,
            text=[f"{v:.1%}" for v in a["ablation_accuracy"]],
            textposition="outside",
            showlegend=False,
        )
    )
    fig.add_hline(y=m["chance_majority"], line_dash="dash", line_color="black")
    return fig


# -- writing -----------------------------------------------------------------------------------
def write_attention_figure(
    result: ProbeResult, *, after_topk: bool, story: int | None = None
) -> go.Figure:
    """Slots x tokens write attention of every step, stacked, for one example story."""
    a = result.arrays
    story = int(a["example_index"]) if story is None else story
    tokens = example_tokens(result, story)
    key = "ex_write" if after_topk else "ex_write_pre"
    w = a[key][story][:, :, : len(tokens)]  # (S, N, T)
    s, n = w.shape[:2]
    rows = [f"step {t} · slot {j}" for t in range(s) for j in range(n)]
    what = (
        "after the top-k mask: each head keeps a slot's k strongest tokens (not renormalised)"
        if after_topk
        else "before top-k: softmax over the tokens, each row sums to 1"
    )
    fig = token_heatmap(
        w.reshape(s * n, len(tokens)),
        rows,
        tokens,
        title="Write attention of each WM slot over the story, "
        f"{'after' if after_topk else 'before'} top-k"
        f"<br><sup>{what}; heads averaged; rows grouped by step</sup>"
        f"<br><sup>{example_caption(result, story)}</sup>",
        colorbar_title="write weight",
        hover_value="weight",
        zmin=0.0,
    )
    for t in range(1, s):
        fig.add_hline(y=t * n - 0.5, line_color="white", line_width=2)
    fig.update_xaxes(title_text="story token (position: word)")
    fig.update_yaxes(title_text="memory step · WM slot")
    fig.update_layout(height=max(fig.layout.height, 260 + 16 * s * n))
    return _title_room(fig, 3)


def write_by_role_figure(result: ProbeResult) -> go.Figure:
    """Where the write attention lands, by token role, per step (all stories)."""
    a = result.arrays
    roles = a["roles"].tolist()
    share = a["write_by_role"]  # (S, R)
    steps = [f"step {t}" for t in range(share.shape[0])]
    fig = new_figure(
        title="What do the slots write?<br><sup>share of the write attention (after top-k) on "
        "each kind of token; mean over stories, summed over slots and heads</sup>",
        barmode="stack",
        xaxis_title="memory step",
        yaxis_title="share of write attention",
        yaxis_range=[0, 1],
    )
    for j, role in enumerate(roles):
        fig.add_trace(go.Bar(x=steps, y=share[:, j], name=role, marker_color=COLORWAY[j]))
    return fig


def support_figure(result: ProbeResult) -> go.Figure:
    """Write attention on supporting facts relative to an average fact, per step."""
    a = result.arrays
    ratio = a["support_write_ratio"]
    steps = [f"step {t}" for t in range(len(ratio))]
    fig = new_figure(
        title="Do the slots write the facts the answer needs?<br><sup>write attention on the "
        "supporting facts / on an average fact of the story; dashed: no preference</sup>",
        xaxis_title="memory step",
        yaxis_title="supporting / average fact",
    )
    fig.add_trace(go.Scatter(x=steps, y=ratio, mode="lines+markers", name="PMI", showlegend=False))
    fig.add_hline(y=1.0, line_dash="dash", line_color="black")
    return fig


def recency_figure(result: ProbeResult) -> go.Figure:
    """Share of the write attention on facts that lands on the last, second-last, ... fact."""
    a = result.arrays
    share = a["write_by_recency"]  # (S, max facts)
    labels = ["last", *[f"{j + 1} back" for j in range(1, share.shape[1])]]
    fig = new_figure(
        title="Which facts do the slots write: the newest or the relevant?<br><sup>share of the "
        "write attention on facts by how recent the fact is; mean over stories; dashed: an even "
        "spread over the story's facts</sup>",
        xaxis_title="fact, counted back from the question",
        yaxis_title="share of write attention on facts",
        barmode="group",
    )
    for t in range(share.shape[0]):
        fig.add_trace(
            go.Bar(x=labels, y=share[t], name=f"step {t}", marker_color=COLORWAY[t % len(COLORWAY)])
        )
    fig.add_trace(
        go.Scatter(
            x=labels,
            y=a["write_recency_uniform"],
            mode="lines+markers",
            line={"dash": "dash", "color": "black"},
            name="even spread",
        )
    )
    return fig


# -- working memory ----------------------------------------------------------------------------
def wm_holdings_figure(result: ProbeResult, story: int | None = None) -> go.Figure:
    """Slots x steps: what each slot holds (text) and how much it changed (colour)."""
    a = result.arrays
    story = int(a["example_index"]) if story is None else story
    change = a["ex_slot_change"][story].T  # (N, S)
    entity = held_entity(result, story).T
    facts = held_fact(result, story).T
    n, s = change.shape
    fig = new_figure(
        title="Working-memory slots across steps: what each slot holds"
        "<br><sup>text: person of the fact with the most write attention so far (hover: the fact)"
        "; colour: cosine to the slot one step earlier (low = overwritten)</sup>"
        f"<br><sup>{example_caption(result, story)}</sup>",
        xaxis_title="memory step",
        yaxis_title="WM slot",
    )
    fig.add_trace(
        go.Heatmap(
            z=change,
            x=list(range(s)),
            y=list(range(n)),
            text=entity,
            texttemplate="%{text}",
            customdata=facts,
            colorscale="Viridis",
            zmin=-1,
            zmax=1,
            colorbar={"title": {"text": "cos to previous"}},
            hovertemplate="step %{x}, slot %{y}<br>holds: %{customdata}<br>"
            "cos to previous %{z:.2f}<extra></extra>",
        )
    )
    fig.update_xaxes(tickvals=list(range(s)), ticktext=[f"step {t}" for t in range(s)])
    fig.update_yaxes(
        tickvals=list(range(n)), ticktext=[f"slot {j}" for j in range(n)], autorange="reversed"
    )
    fig.update_layout(height=260 + 34 * n, width=max(760, 260 + 110 * s))
    return _title_room(fig, 3)


def wm_contents_figure(result: ProbeResult, story: int | None = None) -> go.Figure:
    """The WM matrix (slots x features) at the start and after every step."""
    a = result.arrays
    story = int(a["example_index"]) if story is None else story
    wm = a["ex_wm"][story]  # (S + 1, N, D)
    titles = ["initial", *[f"after step {t}" for t in range(wm.shape[0] - 1)]]
    fig = make_subplots(rows=1, cols=wm.shape[0], subplot_titles=titles, shared_yaxes=True)
    bound = float(np.abs(wm).max()) or 1.0
    for t in range(wm.shape[0]):
        fig.add_trace(
            go.Heatmap(
                z=wm[t],
                colorscale="RdBu_r",
                zmid=0,
                zmin=-bound,
                zmax=bound,
                showscale=t == 0,
                colorbar={"title": {"text": "value"}},
                hovertemplate="slot %{y}, feature %{x}<br>%{z:.3f}<extra></extra>",
            ),
            row=1,
            col=t + 1,
        )
        fig.update_xaxes(title_text="feature", row=1, col=t + 1)
    fig.update_yaxes(title_text="WM slot", autorange="reversed", row=1, col=1)
    fig.update_layout(
        template=TEMPLATE,
        title="Working-memory contents (slots x features) before the story and after each step"
        f"<br><sup>{example_caption(result, story)}</sup>",
        height=420,
        width=1200,
    )
    return _title_room(fig, 2.6)


def slot_map_figure(result: ProbeResult) -> go.Figure:
    """2-D map of WM slot states; buttons recolour by entity, kind, support, slot or step."""
    a, m = result.arrays, result.metrics
    xy = a["map_xy"]
    fig = new_figure(
        title=f"{str(a['map_method']).upper()} of working-memory slot states, coloured by what "
        "each slot holds<br><sup>every story, step and slot; recolour with the buttons; "
        "neighbours from other stories that share the held entity: "
        f"{m.get('map_purity_entity', float('nan')):.2f} (chance "
        f"{m.get('map_purity_entity_chance', float('nan')):.2f}),</sup><br><sup>that share the "
        "slot index: "
        f"{m.get('map_purity_slot', float('nan')):.2f} (chance "
        f"{m.get('map_purity_slot_chance', float('nan')):.2f}); among fact-holding slots, the "
        f"person: {m.get('map_purity_person', float('nan')):.2f} (chance "
        f"{m.get('map_purity_person_chance', float('nan')):.2f})</sup><br><sup>from the same "
        "story: "
        f"{m.get('map_purity_story', float('nan')):.2f} (chance "
        f"{m.get('map_purity_story_chance', float('nan')):.2f})</sup>",
        xaxis_title=f"{str(a['map_method']).upper()} 1",
        yaxis_title=f"{str(a['map_method']).upper()} 2",
        height=680,
    )
    visibility = []
    for c, colouring in enumerate(MAP_COLOURINGS):
        values = a[f"map_{colouring}"]
        categories = sorted(set(values.tolist()))
        for k, category in enumerate(categories):
            sel = values == category
            fig.add_trace(
                go.Scattergl(
                    x=xy[sel, 0],
                    y=xy[sel, 1],
                    mode="markers",
                    name=str(category),
                    text=a["map_hover"][sel],
                    hoverinfo="text",
                    marker={"size": 5, "color": COLORWAY[k % len(COLORWAY)], "opacity": 0.75},
                    visible=c == 0,
                )
            )
            visibility.append(c)
    buttons = [
        {
            "label": colouring,
            "method": "update",
            "args": [{"visible": [v == c for v in visibility]}],
        }
        for c, colouring in enumerate(MAP_COLOURINGS)
    ]
    fig.update_layout(
        updatemenus=[
            {
                "type": "buttons",
                "direction": "down",
                "buttons": buttons,
                "x": 1.02,
                "y": 0.0,
                "xanchor": "left",
                "yanchor": "bottom",
            }
        ],
    )
    return _title_room(fig, 4)


# -- long-term memory --------------------------------------------------------------------------
def consolidation_figure(result: ProbeResult) -> go.Figure:
    """Four views of the LTM across steps, per segment (mean and spread over stories)."""
    a, m = result.arrays, result.metrics
    n_steps = a["ltm_update_mean"].shape[0]
    with_init = ["initial", *[f"step {t}" for t in range(n_steps)]]
    steps = [f"step {t}" for t in range(n_steps)]
    panels = (
        ("ltm_norm", with_init, "segment norm (after its LayerNorm)", "Frobenius norm"),
        ("ltm_update", steps, "size of the update / size of the segment", "|delta| / |LTM|"),
        ("ltm_drift", steps, "cosine to the segment one step earlier", "cosine"),
        ("ltm_wm_sim", with_init, "cosine of segment rows to the same WM slots", "cosine"),
    )
    fig = make_subplots(
        rows=2, cols=2, subplot_titles=[p[2] for p in panels], vertical_spacing=0.16
    )
    n_segments = a["ltm_norm_mean"].shape[1]
    for k, (key, x, _title, y_title) in enumerate(panels):
        row, col = divmod(k, 2)
        mean, sd = a[f"{key}_mean"], a[f"{key}_std"]
        for c in range(n_segments):
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=mean[:, c],
                    error_y={"type": "data", "array": sd[:, c], "visible": True},
                    mode="lines+markers",
                    name=f"segment {c}",
                    legendgroup=f"segment {c}",
                    showlegend=k == 0,
                    line={"color": COLORWAY[c % len(COLORWAY)]},
                ),
                row=row + 1,
                col=col + 1,
            )
        fig.update_yaxes(title_text=y_title, row=row + 1, col=col + 1)
        fig.update_xaxes(title_text="memory step", row=row + 1, col=col + 1)
    fig.add_hline(y=0, line_dash="dot", line_color="black", row=2, col=2)
    fig.update_layout(
        template=TEMPLATE,
        title=f"Consolidation ({m['consolidation']}): how long-term memory takes in working "
        "memory<br><sup>per LTM segment, mean over stories; bars: one standard deviation; "
        "dotted: no similarity</sup>",
        height=800,
        width=1200,
        margin={"t": 120},
    )
    return fig


# -- reading -----------------------------------------------------------------------------------
def read_share_figure(result: ProbeResult, story: int | None = None) -> go.Figure:
    """Per token and step: share of the integrated read that comes from WM (vs LTM)."""
    a = result.arrays
    story = int(a["example_index"]) if story is None else story
    tokens = example_tokens(result, story)
    share = a["ex_share_wm"][story][:, : len(tokens)]
    fig = token_heatmap(
        share,
        [f"step {t}" for t in range(share.shape[0])],
        tokens,
        title="Which memory answers each token?<br><sup>share of its integrated read from "
        "working memory, |g U_w| / (|g U_w| + |(1-g) U_wl|): 1 = all WM, 0 = all LTM via the "
        f"correction</sup><br><sup>{example_caption(result, story)}</sup>",
        colorscale="RdBu",
        zmin=0.0,
        zmax=1.0,
        zmid=0.5,
        colorbar_title="WM share",
        hover_value="WM share",
    )
    fig.update_xaxes(title_text="query token")
    fig.update_yaxes(title_text="memory step")
    fig.update_layout(height=max(fig.layout.height, 420))
    return _title_room(fig, 3)


def read_share_by_role_figure(result: ProbeResult) -> go.Figure:
    """Mean WM read share per token role across steps (all stories)."""
    a = result.arrays
    share = a["read_share_by_role"]  # (S, R)
    steps = [f"step {t}" for t in range(share.shape[0])]
    groups = coinciding(share.T, tolerance=0.005)
    note = ""
    if any(len(g) > 1 for g in groups):
        note = "; roles whose lines coincide (within 0.005) are drawn as one line, named together"
    fig = new_figure(
        title="Working- vs long-term memory reads, by kind of query token<br><sup>mean share "
        f"of the integrated read from WM over stories; dashed: equal shares{note}</sup>",
        xaxis_title="memory step",
        yaxis_title="share from working memory",
        yaxis_range=[0, 1],
    )
    roles = a["roles"].tolist()
    for group in groups:
        j = group[0]
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=share[:, j],
                mode="lines+markers",
                name=" = ".join(roles[k] for k in group),
                line={"color": COLORWAY[j % len(COLORWAY)]},
            )
        )
    fig.add_hline(y=0.5, line_dash="dash", line_color="black")
    return fig


def coinciding(series: np.ndarray, tolerance: float = 1e-3) -> list[list[int]]:
    """Rows of ``series`` grouped by equality within ``tolerance``, in first-seen order: lines
    that would be drawn over each other, so a reader can be told instead of seeing one."""
    groups: list[list[int]] = []
    for i, row in enumerate(series):
        for group in groups:
            if np.allclose(row, series[group[0]], atol=tolerance, rtol=0, equal_nan=True):
                group.append(i)
                break
        else:
            groups.append([i])
    return groups


def correction_figure(
    result: ProbeResult, story: int | None = None, step: int | None = None
) -> go.Figure:
    """Token x token correction attention (query: the token's LTM read; keys: WM reads)."""
    a = result.arrays
    story = int(a["example_index"]) if story is None else story
    tokens = example_tokens(result, story)
    step = a["ex_correction"].shape[1] - 1 if step is None else step
    w = a["ex_correction"][story][step][: len(tokens), : len(tokens)]
    fig = token_heatmap(
        w,
        tokens,
        tokens,
        title=f"Correction attention at step {step}<br><sup>each token's long-term-memory read "
        "(row) looks up the working-memory reads of the tokens (columns); rows sum to 1; heads "
        f"averaged; colour scale from 0 (uniform attention: 1/{len(tokens)} = "
        f"{1 / len(tokens):.3f}; here {w.min():.3f} to {w.max():.3f})</sup>"
        f"<br><sup>{example_caption(result, story)}</sup>",
        colorbar_title="attention",
        hover_value="attention",
        zmin=0.0,
    )
    fig.update_xaxes(title_text="key token (its WM read U_w)")
    fig.update_yaxes(title_text="query token (its LTM read U_l)")
    fig.update_layout(height=fig.layout.height + 60)
    return _title_room(fig, 3)


def figures(result: ProbeResult) -> dict[str, go.Figure]:
    """Every static figure of a result, keyed by file name."""
    a = result.arrays
    out = {"accuracy": accuracy_figure(result)}
    if "ablation_accuracy" in a:
        out["ablation"] = ablation_figure(result)
    out["write_attention_pre_topk"] = write_attention_figure(result, after_topk=False)
    out["write_attention_topk"] = write_attention_figure(result, after_topk=True)
    out["write_by_role"] = write_by_role_figure(result)
    out["write_support"] = support_figure(result)
    out["write_recency"] = recency_figure(result)
    out["wm_holdings"] = wm_holdings_figure(result)
    out["wm_contents"] = wm_contents_figure(result)
    if "map_xy" in a:
        out["slot_map"] = slot_map_figure(result)
    out["consolidation"] = consolidation_figure(result)
    out["read_share"] = read_share_figure(result)
    out["read_share_by_role"] = read_share_by_role_figure(result)
    out["correction_attention"] = correction_figure(result)
    return out
