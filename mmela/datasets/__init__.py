from .shapes_coco import CLASSES, generate_shapes_coco, is_complete

__all__ = ['CLASSES', 'generate_shapes_coco', 'is_complete']
