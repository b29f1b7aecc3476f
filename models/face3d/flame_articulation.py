"""FLAME's joints: linear blend skinning with pose-corrective blendshapes (global, neck, jaw and two eye joints).

Follows FLAME's ``lbs``: joints are regressed from the shaped mesh (``J_regressor``), each joint's rotation is
chained along ``kintree_table``, pose-corrective offsets (``posedirs``) are added for the non-root joints'
(R - I), and every vertex moves with its skinning-weighted joint transforms. Everything is kept in the pack's
normalised model frame (see ``morphable_model``); ``frame_centre`` and ``frame_unit`` map it back to FLAME's metres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ModelFileError
from .face_fitting import axis_angle_to_matrix

JOINT_NAMES = ("global", "neck", "jaw", "left_eye", "right_eye")
JAW_JOINT = JOINT_NAMES.index("jaw")


@dataclass
class Articulation:
    joint_regressor: torch.Tensor  # (J, V)
    joint_offset: torch.Tensor  # (J, 3): added to regressed joints (non-zero only when regressor rows do not sum to 1)
    parents: list[int]  # parent joint of each joint, -1 for the root
    skin_weights: torch.Tensor  # (V, J), rows sum to 1
    pose_basis: torch.Tensor  # ((J - 1) * 9, V * 3): offset per element of the non-root joints' (R - I)
    frame_centre: torch.Tensor  # (3,) FLAME metres of the normalised frame's origin
    frame_unit: float  # FLAME metres per normalised unit

    @property
    def num_joints(self) -> int:
        return len(self.parents)

    def joints(self, shaped: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) shaped vertices -> (B, J, 3) rest joint positions."""
        return torch.einsum("jv,bvc->bjc", self.joint_regressor, shaped) + self.joint_offset

    def pose(self, shaped: torch.Tensor, joint_pose: torch.Tensor) -> torch.Tensor:
        """Pose shaped vertices (B, V, 3) with per-joint axis-angle rotations (B, J, 3)."""
        batch, num_verts = shaped.shape[:2]
        rot = axis_angle_to_matrix(joint_pose.reshape(-1, 3)).reshape(batch, self.num_joints, 3, 3)
        rest = self.joints(shaped)
        eye = torch.eye(3, dtype=shaped.dtype)
        pose_feature = (rot[:, 1:] - eye).reshape(batch, -1)
        posed = shaped + (pose_feature @ self.pose_basis).reshape(batch, num_verts, 3)
        # chain along the kinematic tree: each joint turns about its rest position inside its parent's motion
        world_rot, world_trans = [], []
        for j, parent in enumerate(self.parents):
            if parent < 0:
                world_rot.append(rot[:, j])
                world_trans.append(rest[:, j])
            else:
                offset = (world_rot[parent] @ (rest[:, j] - rest[:, parent]).unsqueeze(-1)).squeeze(-1)
                world_rot.append(world_rot[parent] @ rot[:, j])
                world_trans.append(world_trans[parent] + offset)
        world_rot = torch.stack(world_rot, 1)  # (B, J, 3, 3)
        # transform relative to the rest pose: x -> R_world (x - rest_joint) + posed_joint
        rel_trans = torch.stack(world_trans, 1) - (world_rot @ rest.unsqueeze(-1)).squeeze(-1)
        vert_rot = torch.einsum("vj,bjik->bvik", self.skin_weights, world_rot)
        vert_trans = torch.einsum("vj,bji->bvi", self.skin_weights, rel_trans)
        return (vert_rot @ posed.unsqueeze(-1)).squeeze(-1) + vert_trans

    def jaw_only(self, jaw_pose: torch.Tensor) -> torch.Tensor:
        """(B, 3) jaw axis-angle -> (B, J, 3) joint pose with every other joint at rest."""
        pose = torch.zeros(jaw_pose.shape[0], self.num_joints, 3, dtype=jaw_pose.dtype)
        pose[:, JAW_JOINT] = jaw_pose
        return pose


def flame_articulation(flame: dict, centre: np.ndarray, unit: float, path) -> Articulation:
    """Build the articulation from FLAME's arrays for a model normalised as (v - centre) / unit."""
    missing = [k for k in ("J_regressor", "kintree_table", "weights", "posedirs") if k not in flame]
    if missing:
        raise ModelFileError(f"{path} lacks FLAME's joint data ({', '.join(missing)})",
                             "use an unmodified FLAME generic_model.pkl")
    regressor = np.asarray(flame["J_regressor"], np.float64)
    num_verts = np.asarray(flame["v_template"]).shape[0]
    num_joints = regressor.shape[0]
    kintree = np.asarray(flame["kintree_table"]).astype(np.int64)
    weights = np.asarray(flame["weights"], np.float64)
    posedirs = np.asarray(flame["posedirs"], np.float64)
    if regressor.shape[1] != num_verts or kintree.shape != (2, num_joints) or \
            not np.array_equal(kintree[1], np.arange(num_joints)) or weights.shape != (num_verts, num_joints) or \
            posedirs.shape != (num_verts, 3, (num_joints - 1) * 9):
        raise ModelFileError(f"{path}: joint arrays J_regressor {regressor.shape}, kintree_table {kintree.shape}, "
                             f"weights {weights.shape}, posedirs {posedirs.shape} do not fit {num_verts} vertices",
                             "use an unmodified FLAME generic_model.pkl")
    parents = [-1 if p < 0 or p >= num_joints else int(p) for p in kintree[0]]  # the root's parent is 2**32 - 1
    if parents[0] != -1 or any(not 0 <= p < j for j, p in enumerate(parents[1:], 1)):
        raise ModelFileError(f"{path}: kintree_table {kintree[0].tolist()} is not a tree rooted at joint 0",
                             "use an unmodified FLAME generic_model.pkl")
    weights = weights / np.clip(weights.sum(1, keepdims=True), 1e-12, None)
    # regressed joints in the normalised frame: (J_reg @ (unit * v + centre) - centre) / unit
    offset = (regressor.sum(1, keepdims=True) - 1.0) * np.asarray(centre, np.float64) / unit
    return Articulation(
        joint_regressor=torch.from_numpy(regressor.astype(np.float32)),
        joint_offset=torch.from_numpy(offset.astype(np.float32)),
        parents=parents,
        skin_weights=torch.from_numpy(weights.astype(np.float32)),
        pose_basis=torch.from_numpy((posedirs.reshape(-1, posedirs.shape[2]).T / unit).astype(np.float32)),
        frame_centre=torch.from_numpy(np.asarray(centre, np.float32)),
        frame_unit=float(unit),
    )
