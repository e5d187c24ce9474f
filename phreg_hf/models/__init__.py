# Copyright 2026 The phreg-hf authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""The code a saved PH-Reg checkpoint carries for `trust_remote_code=True`.

Exactly the files `save_pretrained` copies next to the weights, flat, under the same names:
`configuration_phreg.py` (configs), `modeling_phreg_registers.py` (the register mixin every student shares and the
registry of student classes), `modeling_phreg.py` (the ViT, DINOv2 and CLIP vision adapters),
`modeling_phreg_backbone.py` (the students as `AutoBackbone`s), `modeling_phreg_siglip.py` and
`modeling_phreg_dinov3.py` (the SigLIP and DINOv3 students, each with its backbone form), `modeling_phreg_clip.py`
(the full CLIP student), `clip_dense.py` (MaskCLIP / NACLIP dense paths), `pipeline_phreg_segmentation.py`
(the open-vocabulary segmentation pipeline), and `configuration_phreg_ttr.py` + `modeling_phreg_ttr.py` (test-time
registers, the training-free baseline, with its backbone form).

Imports: these files import only each other (relatively, from this folder), transformers, torch and the
libraries transformers needs. Nothing else of phreg_hf: a Hub user without phreg-hf runs them as they are. This
`__init__.py` is not copied and stays empty.
"""
