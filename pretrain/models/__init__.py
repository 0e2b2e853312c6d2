from .vit import ClsAttentionTap, create_vit, vit_arch

__all__ = ["ClsAttentionTap", "create_vit", "vit_arch"]
