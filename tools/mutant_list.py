"""The planted bugs of ``tools/mutants.py``: realistic one-line mistakes, each with the test files that must catch it.

Each entry: a name, the file, the exact line text to replace (it must occur once; a text found zero or several
times makes the mutant "stale", reported and not counted, so update it when the code moves), its replacement,
and the pytest arguments (files, optionally ``-k``) run against it. Keep the selections tight: every mutant
runs its own pytest process.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


GLUE = "tests/test_glue_independent.py"

MUTANTS: tuple[Mutant, ...] = (
    # --- the four bugs the suite once missed (issue 17)
    Mutant(
        "region values projected by to_k",
        "ale_kernels/diffusers/processor.py",
        "region_values = attn.to_v(embeds)",
        "region_values = attn.to_k(embeds)",
        (GLUE,),
    ),
    Mutant(
        "masks resized bilinear, not nearest",
        "ale_kernels/diffusers/regions.py",
        'size=(height, width), mode="nearest")[0]',
        'size=(height, width), mode="bilinear")[0]',
        (GLUE, "-k", "routing or routes"),
    ),
    Mutant(
        "source noise prediction from the target branch",
        "ale_pipeline/ddcm_loop.py",
        "eps_source = e_su + source_guidance_scale * (e_sc - e_su)",
        "eps_source = e_tu + source_guidance_scale * (e_tc - e_tu)",
        ("tests/test_ddcm_wiring.py",),
    ),
    Mutant(
        "evaluate_case scores the source phrases",
        "ale_pipeline/bench/metrics.py",
        "source, load_rgb(edited_image), masks, case.target_phrases, models,",
        "source, load_rgb(edited_image), masks, case.source_phrases, models,",
        ("tests/test_bench_metrics.py", "-k", "evaluate_case"),
    ),
    # --- the two bugs once caught by a single test
    Mutant(
        "ALE routes source_cond instead of target_cond",
        "ale_kernels/diffusers/ale.py",
        'TARGET_COND = ALE_BATCH.index("target_cond")',
        'TARGET_COND = ALE_BATCH.index("source_cond")',
        (GLUE, "-k", "target_cond"),
    ),
    Mutant(
        "C++ online softmax forgets to rescale the running sum",
        "csrc/region_attention_kernel.h",
        "l[i] = l[i] * alpha[i] + hsum(sum);",
        "l[i] = l[i] + hsum(sum);",
        ("tests/test_cpp_backend.py", "-k", "default_key_tile"),
    ),
    # --- processor, ops, routing
    Mutant(
        "ALE's Q/K injection pairs reversed",
        "ale_kernels/diffusers/ale.py",
        "QK_INJECTION_PAIRS = ((0, 1), (2, 3))",
        "QK_INJECTION_PAIRS = ((1, 0), (3, 2))",
        ("tests/test_processors.py", "-k", "injection_only_targets"),
    ),
    Mutant(
        "torch backend masks the allowed tokens instead of the hidden ones",
        "ale_kernels/torch_impl.py",
        "bias = torch.zeros(tokens.shape, dtype=q.dtype, device=q.device).masked_fill_(~tokens, mask_value)",
        "bias = torch.zeros(tokens.shape, dtype=q.dtype, device=q.device).masked_fill_(tokens, mask_value)",
        ("tests/test_torch_backend.py",),
    ),
    Mutant(
        "reference shows object 0's tokens to every pixel",
        "ale_kernels/reference.py",
        "return (owner[:, None, :] < 0) | (owned_bit == 1)",
        "return (owner[:, None, :] <= 0) | (owned_bit == 1)",
        ("tests/test_reference.py",),
    ),
    Mutant(
        "reference adds the mask value to the allowed tokens",
        "ale_kernels/reference.py",
        "scores = scores + torch.where(allowed, 0.0, mask_value).to(scores.dtype)",
        "scores = scores + torch.where(allowed, mask_value, 0.0).to(scores.dtype)",
        ("tests/test_reference.py",),
    ),
    Mutant(
        "overlaps routed to an object instead of the background",
        "ale_kernels/routing.py",
        "alone = masks.sum(0) == 1",
        "alone = masks.sum(0) >= 1",
        ("tests/test_masks.py", GLUE, "-k", "not target_cond and not plain and not to_v"),
    ),
    Mutant(
        "cover bits shifted by one object",
        "ale_kernels/routing.py",
        "bits = 1 << torch.arange(objects, device=masks.device, dtype=torch.int32)",
        "bits = 2 << torch.arange(objects, device=masks.device, dtype=torch.int32)",
        ("tests/test_routing_plan.py", GLUE, "-k", "routing or routes"),
    ),
    # --- masks
    Mutant(
        "uint8 masks thresholded at > 128",
        "ale_pipeline/masks.py",
        "return t >= 128",
        "return t > 128",
        ("tests/test_masks.py",),
    ),
    Mutant(
        "dilation's row window one pixel short",
        "ale_pipeline/masks.py",
        "hi = (cols + half + 1).clamp(0, width)",
        "hi = (cols + half).clamp(0, width)",
        ("tests/test_masks.py",),
    ),
    Mutant(
        "dilation disk without its rim",
        "ale_pipeline/masks.py",
        "return r[:, None] ** 2 + r[None, :] ** 2 <= radius * radius",
        "return r[:, None] ** 2 + r[None, :] ** 2 < radius * radius",
        ("tests/test_masks.py",),
    ),
    Mutant(
        "dilation radius from the width",
        "ale_pipeline/masks.py",
        "radius = int(dilation * height)",
        "radius = int(dilation * width)",
        ("tests/test_masks.py",),
    ),
    # --- ORE and prompts
    Mutant(
        "ORE keeps the last word before EOS",
        "ale_pipeline/ore.py",
        "ore[1:eos_position] = 0",
        "ore[1 : eos_position - 1] = 0",
        ("tests/test_ore.py",),
    ),
    Mutant(
        "ORE copies the phrase rows from BOS on",
        "ale_pipeline/ore.py",
        "ore[span.start : span.stop] = rows[1 : 1 + len(span)]",
        "ore[span.start : span.stop] = rows[0 : len(span)]",
        ("tests/test_ore.py",),
    ),
    Mutant(
        "published ORE quirk applied when not asked for",
        "ale_pipeline/ore.py",
        "source = slice(span.start, span.stop) if published_quirk else slice(1, 1 + len(span))",
        "source = slice(span.start, span.stop) if not published_quirk else slice(1, 1 + len(span))",
        ("tests/test_ore.py",),
    ),
    Mutant(
        "token ownership one past the phrase",
        "ale_pipeline/prompts.py",
        "owner[span.start : span.stop] = k",
        "owner[span.start : span.stop + 1] = k",
        ("tests/test_prompts.py",),
    ),
    Mutant(
        "source EOS position off by one",
        "ale_pipeline/prompts.py",
        "source_eos=len(source_ids) - 1,",
        "source_eos=len(source_ids),",
        ("tests/test_prompts.py", "tests/test_ore.py"),
    ),
    # --- sampling, DDCM, background blending
    Mutant(
        "source and target texts swapped in the UNet batch",
        "ale_pipeline/ddcm_loop.py",
        "text = torch.cat([texts.uncond, texts.uncond, texts.source, texts.target])",
        "text = torch.cat([texts.uncond, texts.uncond, texts.target, texts.source])",
        ("tests/test_ddcm_wiring.py", "-k", "texts"),
    ),
    Mutant(
        "DDCM noise-prediction difference reversed",
        "ale_pipeline/sampling.py",
        "eps_calibrated = eps_target - eps_source + eps_cons",
        "eps_calibrated = eps_source - eps_target + eps_cons",
        ("tests/test_sampling.py",),
    ),
    Mutant(
        "DDCM sigma from this step's alpha",
        "ale_pipeline/sampling.py",
        "sigma_sq = eta * (1.0 - alpha_next)",
        "sigma_sq = eta * (1.0 - alpha_t)",
        ("tests/test_sampling.py",),
    ),
    Mutant(
        "injection on the last step too",
        "ale_pipeline/sampling.py",
        "return [(step + 1) / num_steps < self_replace_steps for step in range(num_steps)]",
        "return [(step + 1) / num_steps <= self_replace_steps for step in range(num_steps)]",
        ("tests/test_sampling.py",),
    ),
    Mutant(
        "LCM timesteps picked with ceil",
        "ale_pipeline/sampling.py",
        "picks = [math.floor(i * original_steps / num_steps) for i in range(num_steps)]",
        "picks = [math.ceil(i * original_steps / num_steps) for i in range(num_steps)]",
        ("tests/test_sampling.py",),
    ),
    Mutant(
        "blending keeps the target on the background",
        "ale_pipeline/sampling.py",
        "return torch.where(foreground.to(z_target.device), z_target, z_source)",
        "return torch.where(foreground.to(z_target.device), z_source, z_target)",
        ("tests/test_sampling.py",),
    ),
    Mutant(
        "blending from the first step",
        "ale_pipeline/pipeline.py",
        "blend_background_from=1 if settings.use_background_blend else None,",
        "blend_background_from=0 if settings.use_background_blend else None,",
        ("tests/test_pipeline.py", "-k", "background"),
    ),
    Mutant(
        "blend mask from the background instead of the foreground",
        "ale_pipeline/pipeline.py",
        "foreground = background_blend_mask(~edit_masks.background, latent_size).to(device)",
        "foreground = background_blend_mask(edit_masks.background, latent_size).to(device)",
        ("tests/test_ddcm_wiring.py", "-k", "blending"),
    ),
    # --- metrics and CLI
    Mutant(
        "TILS scores each object against its own phrase",
        "ale_pipeline/bench/metrics.py",
        "tils = [obj[j, col[i]] for i in range(n) for j in range(n) if j != i]",
        "tils = [obj[j, col[i]] for i in range(n) for j in range(n) if j == i]",
        ("tests/test_bench_metrics.py", "-k", "clip"),
    ),
    Mutant(
        "background metrics over the edited part",
        "ale_pipeline/bench/metrics.py",
        "keep = 1.0 - union",
        "keep = union",
        ("tests/test_bench_metrics.py", "-k", "background"),
    ),
    Mutant(
        "CLI reads 'source=>target' the wrong way round",
        "ale_pipeline/cli.py",
        'source, target = (p.strip() for p in edit.split("=>", 1))',
        'target, source = (p.strip() for p in edit.split("=>", 1))',
        ("tests/test_cli.py",),
    ),
)
